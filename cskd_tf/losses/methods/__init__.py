"""One module per training method; each registers itself in METHODS."""
