"""The capture job (makedumpfile's role): read a dump, select pages, write a dump."""
