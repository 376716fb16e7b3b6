"""The command line: commands in-process (CliRunner) and end to end (subprocesses)."""
