"""findscu: a drop-in replacement for DCMTK's findscu (options, output, files, exit codes)."""
