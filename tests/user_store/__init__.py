"""The user-vector store: one conformance suite that every backend passes."""
