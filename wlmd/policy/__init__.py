"""Per-peer policy (issue #17): what wlmd changes, per called and calling AE, in how it answers.

``model`` holds the configured policies and picks the one for a peer; ``config`` reads them from
wlmd.conf's ``[[policy]]`` tables; ``names`` is the tolerant person-name comparison (shared with
the HTTP search's ``fuzzymatching``); ``charsets`` decodes and re-encodes values between
DICOM character sets; ``apply`` turns a prepared query into what one policy asks for.
"""
