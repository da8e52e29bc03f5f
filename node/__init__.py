"""The Tongban node application: domain, adapters, entry points and the process runtime."""

__version__ = "0.1.0"
