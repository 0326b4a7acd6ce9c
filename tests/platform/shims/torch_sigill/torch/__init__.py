"""Test shim: a torch built for a newer CPU, killed by SIGILL on import."""

import os
import signal

os.kill(os.getpid(), signal.SIGILL)
