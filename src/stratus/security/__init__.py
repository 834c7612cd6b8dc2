"""Identity, roles, audit, encryption and limits: who may do what, and the proof of it."""
