"""The one compiled part, kdumpy's batch page compressor; everything else is in pyproject.toml.

Optional: without a C compiler the install goes on and kdumpy compresses a page per library call.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kdumpy._pack",
            ["src/kdumpy/_pack.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall"],
            optional=True,
        )
    ]
)
