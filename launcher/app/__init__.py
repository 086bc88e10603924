"""What people and scripts call: the CLI, its commands, the tables, checks and the container probe."""
