"""What this machine can run, and a llama.cpp build that only uses that.

Standard library only (and `llama_cpp` in the decode check's child process): `scripts/install.sh` runs these
modules by path before llamafoundry or its dependencies are installed.
"""
