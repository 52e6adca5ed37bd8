"""Conveyor core: settings, runtime environment and the doors to external stores.

Importing it changes nothing in the process; entry points call `conveyor.runtime.configure()`.
"""
