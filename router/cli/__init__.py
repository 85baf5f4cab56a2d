"""The command line: parse, read settings, make one library call, print."""
