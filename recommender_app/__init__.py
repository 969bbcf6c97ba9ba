"""The recommendation app: personalized and similar items, click tracking, the homepage module."""
