"""What the command lines in src/ do: each script parses its arguments and calls its module here."""
