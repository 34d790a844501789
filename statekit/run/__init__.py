"""Running a program on the machine: engine, host, processes, files."""
