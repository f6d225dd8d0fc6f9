"""What every runtime noun shares: FLEX_HOME, the metadata database, mounts, procfs and subid parsing."""
