"""Example applications served through the gateway (see README.md here)."""
