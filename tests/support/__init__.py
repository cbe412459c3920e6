"""What the tests share: processes (start, wait, stop; DCMTK tools), the one server harness
(server), the one raw upper-layer client (wire), datasets and worklist files, test PKI, and the
differential comparison with wlmscpfs (differential, corpus). No test module imports another."""
