"""The job runner of GCE Lab: a store (database), a supervisor (processes), executors, a client.

Kept import-light on purpose: a training child (`jobs.worker_process`) installs its signal
handlers before torch is imported. Import what you need from the submodules:
``from jobs.client import LabClient``.
"""
