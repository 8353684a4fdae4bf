"""Builds ferry's extension with CMake for the interpreter running pip.

    pip install --no-build-isolation .
"""
import os
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.path.join(ROOT, "build", "pip")
        subprocess.check_call(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                               f"-DFERRY_PYTHON={sys.executable}", "-DFERRY_BUILD_TESTS=OFF",
                               "-DFERRY_BUILD_BENCH=OFF"])
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "_ferry", "-j", str(os.cpu_count() or 2)])
        built = os.path.join(ROOT, "python", "ferry", os.path.basename(self.get_ext_filename(ext.name)))
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        self.copy_file(built, target)


setup(ext_modules=[Extension("ferry._ferry", sources=[])], cmdclass={"build_ext": CMakeBuild})
