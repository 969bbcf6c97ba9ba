"""The app's routers, one module per endpoint group."""
