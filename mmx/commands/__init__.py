"""One module per `mmx` command or command group; each is thin (STYLE.md)."""
