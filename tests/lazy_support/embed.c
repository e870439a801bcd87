/* An embedding program for tests/lazy.rs: three Py_Initialize /
 * PyRun_SimpleString / Py_FinalizeEx cycles in one process, linked against
 * a libpython archive whose deepfreeze.o and frozen.o were replaced by a
 * lazily-initialized pyfreeze-obj object (in place of the interpreter's
 * python.o).
 *
 * argv[1]: the Python code to run in every cycle; before it, each cycle
 * runs "CYCLE = <n>" in __main__. Exit status 0 only when every cycle ran
 * its code without an exception and finalized cleanly. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PYTHON-CODE\n", argv[0]);
        return 2;
    }
    for (int cycle = 1; cycle <= 3; cycle++) {
        char head[32];
        Py_Initialize();
        snprintf(head, sizeof head, "CYCLE = %d\n", cycle);
        if (PyRun_SimpleString(head) != 0) {
            fprintf(stderr, "embed: cycle %d: setting CYCLE failed\n", cycle);
            return 10 + cycle;
        }
        if (PyRun_SimpleString(argv[1]) != 0) {
            fprintf(stderr, "embed: cycle %d: the code raised\n", cycle);
            return 20 + cycle;
        }
        if (Py_FinalizeEx() < 0) {
            fprintf(stderr, "embed: cycle %d: Py_FinalizeEx failed\n", cycle);
            return 30 + cycle;
        }
        printf("embed: cycle %d finalized\n", cycle);
        fflush(stdout);
    }
    return 0;
}
