"""Running processes: service definitions, the supervisor and the local federation."""
