"""The DCMTK-style command-line engine shared by ``wlmd`` and ``findscu``.

DCMTK's OFCommandLine and OFConsoleApplication give every DCMTK tool the same command-line
behaviour: ``@file`` command files, ``+x``/``-x`` options anywhere, rightmost-wins, sscanf-read
numbers, one help layout and ``error: ...`` texts. Scripts written for wlmscpfs and findscu
rely on all of it, so it lives here once and each program supplies only its option table:

- ``values``: reading and range-checking option values the way sscanf and OFCommandLine do;
- ``option``: one row of an option table;
- ``general``: the general options every DCMTK tool has (help, version, logging);
- ``tokens``: ``@file`` expansion and sorting arguments into options and parameters;
- ``console``: the identification header, ``--help`` layout and error texts;
- ``render``: the TOML configuration file and man page option list made from a table.
"""
