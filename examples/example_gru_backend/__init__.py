"""A minimal third-party adapter: the example the README walks through."""
