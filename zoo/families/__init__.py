"""Model family specs, one framework-free module each (config dataclass, variants, state-dict
key/shape table, example and ``--verify`` inputs, input checks, a tiny config for tests).

Every public module here is imported when the registry is first read
(``zoo.registry.FAMILIES``): a new family is a new module, registered by what it defines.
"""
