"""Use cases: what a node does, written against the domain and the adapters' interfaces."""
