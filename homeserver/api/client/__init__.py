"""Client-server API endpoints, one module per spec section."""
