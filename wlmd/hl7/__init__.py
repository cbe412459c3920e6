"""HL7 v2 order intake over MLLP: RIS orders become worklist entries through the writer."""
