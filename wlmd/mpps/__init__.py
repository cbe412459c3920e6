"""Modality Performed Procedure Step: the N-CREATE/N-SET service, its storage and forwarding."""
