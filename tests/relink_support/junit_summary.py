# Run by the stock pyenv interpreter: summarize regrtest's --junit-xml
# output as one line per test case, "TEST_ID<TAB>OUTCOME", where OUTCOME is
# passed, skipped, failure or error (or status/result when not run/completed).
# argv: JUNIT_XML
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
seen = {}
for case in root.iter("testcase"):
    kinds = {child.tag for child in case}
    if "error" in kinds:
        outcome = "error"
    elif "failure" in kinds:
        outcome = "failure"
    elif "skipped" in kinds:
        outcome = "skipped"
    elif (case.get("status"), case.get("result")) in ((None, None), ("run", "completed")):
        outcome = "passed"
    else:
        outcome = "%s/%s" % (case.get("status"), case.get("result"))
    name = case.get("name") or "?"
    # a name can repeat (subTest-less parametrized reruns): keep them apart
    n = seen.get(name, 0)
    seen[name] = n + 1
    if n:
        name = "%s#%d" % (name, n)
    print("%s\t%s" % (name, outcome))
