"""The read side: archive members → decrypted entries → restore, list, verify."""
