"""Conveyor core: settings, runtime environment and the doors to external stores."""

from conveyor import runtime

runtime.configure()
