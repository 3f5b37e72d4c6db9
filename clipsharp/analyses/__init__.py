"""One module per command that computes something (same names as ``clipsharp/cli/``)."""
