"""Stand-in for ansible-test's get-pip bootstrap script, whose download host is not
reachable from CI. It bootstraps pip from the interpreter's own ensurepip wheel, then
lets that pip install the versions ansible-test asked for from the configured index."""

import subprocess
import sys

ARGS = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'])
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + ARGS)
