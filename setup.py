"""
Packaging for txstore.

``package_dir={"": "."}`` is deliberate: with it setuptools' editable install adds the project
root to ``sys.path`` (a plain .pth file) instead of installing an import hook, and only then does
Twisted's plugin scan find ``twisted/plugins/txstore_plugins.py``. ``twisted.plugins`` is listed
as a package without an ``__init__.py``: shipping one would shadow Twisted's own.
"""

from setuptools import find_packages, setup

setup(
    name="txstore",
    version="0.1.0",
    description="A distributed object store on Twisted that speaks the OpenStack Swift API",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="Apache-2.0",
    python_requires=">=3.11",
    package_dir={"": "."},
    packages=[*find_packages(include=["txstore", "txstore.*"]), "twisted.plugins"],
    package_data={"twisted.plugins": ["txstore_plugins.py"], "txstore.middleware": ["console_page.html"]},
    install_requires=[
        "twisted[tls]>=24.7.0",
        "treq>=24.9.1",
        "klein>=24.8.0",
        "zope.interface>=6.0",
        "attrs>=23.1.0",
        "pyeclib>=1.6.1",
        "prometheus_client>=0.20.0",
        "service-identity>=24.1.0",
        "pyopenssl>=24.2.1",
    ],
    extras_require={
        "client": ["python-swiftclient>=4.4.0"],
        "test": [
            "boto3>=1.26",  # the S3 API's tests sign with botocore and drive a cluster with boto3
            "hypothesis>=6.100",
            "python-swiftclient>=4.4.0",
            "setuptools>=65",
            "wheel>=0.40",
        ],
    },
    entry_points={
        "console_scripts": [
            "txstore-aio = txstore.aio.launcher:main",
            "txstore-ring = txstore.ring.cli:main",
            "txstore-recon = txstore.recon_cli:main",
            "txstore-object-info = txstore.object_info:main",
            "txstore-dispersion = txstore.dispersion.cli:main",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Topic :: System :: Distributed Computing",
    ],
)
