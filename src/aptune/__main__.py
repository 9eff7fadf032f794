from aptune.cli import entry

entry()
