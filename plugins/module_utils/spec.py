# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One definition per option, shared by the Ansible modules and the host command.

A subsystem lists its options once as :class:`Option` objects. A module builds its
``argument_spec`` with :func:`argument_spec`; the host command adds the same options as
flags with :func:`add_arguments` and turns the parsed flags back into the parameter dict
the core takes with :func:`params_from_args`. A name, an alias, a type or a default is
therefore written once, in the core (the module's DOCUMENTATION repeats the default for
readers, and ansible-test's validate-modules checks that the two agree).

The host command cannot use Ansible's own argument validation: the host has the
collection's core but not ansible-core. argparse checks types and choices there; the
core's own checks (names, paths, ranges) run on both paths.
"""

from __future__ import annotations

_ARGPARSE_TYPES = {'str': str, 'path': str, 'raw': str, 'int': int, 'float': float}


class Option(object):
    """One option of a module and of the matching host command.

    ``cli=False`` keeps an option off the command line (a password: the host command
    reads secrets from files or the environment, never from its arguments, which every
    user of the host can read). ``flag_aliases`` are extra command-line spellings kept for
    compatibility (without the leading ``--``); ``aliases`` are the module's aliases, which
    the command line takes too.
    """

    __slots__ = ('name', 'type', 'default', 'required', 'choices', 'aliases', 'no_log',
                 'elements', 'help', 'cli', 'flag_aliases')

    def __init__(self, name, type='str', default=None, required=False, choices=None,
                 aliases=(), no_log=False, elements=None, help=None, cli=True,
                 flag_aliases=()):
        if type not in _ARGPARSE_TYPES and type not in ('bool', 'list', 'dict'):
            raise ValueError('option %s: unsupported type %r' % (name, type))
        self.name = name
        self.type = type
        self.default = default
        self.required = required
        self.choices = tuple(choices) if choices is not None else None
        self.aliases = tuple(aliases)
        self.no_log = no_log
        self.elements = elements
        self.help = help
        # a mapping has no command-line spelling: the host command reads it from a file, or
        # only the modules take it
        self.cli = cli and not no_log and type != 'dict'
        self.flag_aliases = tuple(flag_aliases)

    def replace(self, **changes):
        """A copy with some fields changed (for example another default)."""
        fields = dict((slot, getattr(self, slot)) for slot in self.__slots__)
        fields.update(changes)
        return Option(**fields)

    def argument_spec(self):
        entry = dict(type=self.type)
        if self.required:
            entry['required'] = True
        if self.default is not None:
            entry['default'] = list(self.default) if self.type == 'list' else self.default
        if self.choices is not None:
            entry['choices'] = list(self.choices)
        if self.aliases:
            entry['aliases'] = list(self.aliases)
        if self.no_log:
            entry['no_log'] = True
        if self.elements:
            entry['elements'] = self.elements
        return entry

    def flags(self):
        names = (self.name,) + self.aliases + self.flag_aliases
        return ['--' + name.replace('_', '-') for name in names]


def prefixed(prefix, options, renames=None):
    """``({new name: original name}, options under their new names)``: the same options
    for a second server of one command (``--postgres-port`` beside ``--redis-port``). The
    new names lose ``login_`` (or take ``renames``) and have no aliases, so a flag of one
    server never shadows another's."""
    renames = renames or {}
    names, result = {}, []
    for option in options:
        name = prefix + renames.get(option.name, option.name.replace('login_', ''))
        names[name] = option.name
        result.append(option.replace(name=name, aliases=(), flag_aliases=()))
    return names, tuple(result)


def argument_spec(options):
    """The ``argument_spec`` dict of ``options`` (an iterable of :class:`Option`)."""
    spec = {}
    for option in options:
        if option.name in spec:
            raise ValueError('option %s is defined twice' % option.name)
        spec[option.name] = option.argument_spec()
    return spec


def add_arguments(parser, options):
    """Add every command-line option of ``options`` to the argparse ``parser``."""
    for option in options:
        if not option.cli:
            continue
        help_text = option.help
        if option.type == 'bool':
            group = parser.add_mutually_exclusive_group()
            group.add_argument(*option.flags(), dest=option.name, action='store_true',
                               help=help_text)
            group.add_argument('--no-' + option.name.replace('_', '-'), dest=option.name,
                               action='store_false')
            parser.set_defaults(**{option.name: bool(option.default)})
            continue
        kwargs = dict(dest=option.name, required=option.required, help=help_text)
        if option.type == 'list':
            kwargs.update(action='append', type=_ARGPARSE_TYPES.get(option.elements or 'str', str),
                          default=None)
        else:
            kwargs.update(type=_ARGPARSE_TYPES[option.type], default=option.default)
        if option.choices is not None:
            kwargs['choices'] = option.choices
        if help_text is not None and option.default not in (None, '', [], ()):
            kwargs['help'] = '%s (default: %s)' % (help_text, option.default)
        parser.add_argument(*option.flags(), **kwargs)


def params_from_args(args, options):
    """The parameter dict the core takes, from parsed command-line ``args``.

    Options that are not on the command line get their defaults, so the core sees the
    same keys from both entry points.
    """
    params = {}
    for option in options:
        value = getattr(args, option.name, None) if option.cli else None
        if value is None:
            value = list(option.default) if option.type == 'list' and option.default is not None \
                else option.default
        params[option.name] = value
    return params
