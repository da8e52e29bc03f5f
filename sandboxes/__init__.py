"""Sandboxes of outside services (payment gateway, ...): each runs as its own process and speaks its real protocol."""
