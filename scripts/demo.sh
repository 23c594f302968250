#!/usr/bin/env bash
# README quick start, command 1: the whole subnet on this machine (installs what it needs first).
# Extra arguments go to scripts/local_subnet.py (e.g. --steps 10 --miners 8 --dir /tmp/net).
source "$(dirname "$0")/env.sh"
.venv/bin/python scripts/local_subnet.py "$@"
