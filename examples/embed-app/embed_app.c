/* embed-app: a C program that embeds CPython's static libpython, relinked
 * with an application's modules frozen (build.sh), and runs the
 * application's entry point as `python -m hello_app ARGS...` would.
 *
 * The interpreter is isolated (no environment variables, no user or site
 * packages, no current folder on the path): everything the application
 * imports is frozen into the program, but for the extension modules and
 * the stdlib modules it was not given, which come from the installation
 * the archive belongs to. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

int main(int argc, char **argv)
{
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    PyStatus status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (!PyStatus_Exception(status))
        status = PyConfig_SetString(&config, &config.run_module, L"hello_app");
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    /* runs hello_app.__main__; SystemExit becomes the exit status */
    return Py_RunMain();
}
