complete -c backup-list -l kind -d 'Only snapshots of this kind' -r -f -a "checkpoint\t''
backup\t''
safety\t''"
complete -c backup-list -l diff -d 'What changed from snapshot A to snapshot B (or to the live home when B is left out)' -r
complete -c backup-list -l external -d 'List the external copy (the only target, or the one named) instead of the local repository' -r
complete -c backup-list -l repo -d 'Repository root [env: BACKUP_REPO] [default: ~/.dotfiles-backups]' -r -F
complete -c backup-list -l config -d 'Config file [env: BACKUP_CONFIG] [default: ~/.config/dotfiles-backup/config.toml]' -r -F
complete -c backup-list -l path -d 'Track this path instead of the configured set (repeatable)' -r -F
complete -c backup-list -l color -d 'Colour in human output: auto (a terminal and no NO_COLOR), always, never' -r -f -a "auto\t'On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`'
always\t'Always (an explicit flag outranks `NO_COLOR`, as no-color.org asks)'
never\t'Never'"
complete -c backup-list -l wait -d 'Seconds a writer waits for the repository lock [env: BACKUP_LOCK_WAIT] [default: 5]' -r
complete -c backup-list -l retries -d 'Attempts for transient failures (unreachable external target, busy resource) [env: BACKUP_RETRIES] [default: 3]' -r
complete -c backup-list -l verify-after-write -d 'Read back the packs a checkpoint wrote and check their hashes before committing it (true/false) [env: BACKUP_VERIFY_AFTER_WRITE] [config: repository.verify_after_write]' -r -f -a "true\t''
false\t''"
complete -c backup-list -l files -d 'List the snapshot\'s entries with size, mode and sha256'
complete -c backup-list -l phases -d 'Bootstrap runs, newest first: each phase\'s checkpoint, whether the phase changed the tracked files, and how much'
complete -c backup-list -l stats -d 'Summarise the run log: runs per command, success rate, failures by code, median/p95 duration, last success per phase'
complete -c backup-list -l all-homes -d 'List and select the snapshots of every home sharing the repository, not only $HOME\'s'
complete -c backup-list -l json -d 'Print exactly one JSON document (the envelope) on stdout'
complete -c backup-list -s q -l quiet -d 'No human summary on stdout (errors still go to stderr)'
complete -c backup-list -s v -l verbose -d 'More detail on stderr'
complete -c backup-list -l allow-foreign-repo -d 'Use a repository owned by another user (owners, setuid and setgid bits in it are not restored) [env: BACKUP_ALLOW_FOREIGN_REPO]'
complete -c backup-list -s h -l help -d 'Print help (see more with \'--help\')'
complete -c backup-list -s V -l version -d 'Print version'
