# Run by the *stock* pyenv interpreter (not a relinked one): import every
# fixture from its source and record repr(check()) as JSON on stdout.
# argv: FIXTURES_DIR NAME...
import json
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
out = {}
for name in sys.argv[2:]:
    module = __import__(name)
    out[name] = repr(module.check())
json.dump(out, sys.stdout)
