"""Command line of the sandbox SMS gateway."""

from sandboxes.sms.server import main

if __name__ == "__main__":
    raise SystemExit(main())
