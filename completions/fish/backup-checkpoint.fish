# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_backup_checkpoint_global_optspecs
    string join \n health-check dry-run exclude= sizes tag= run= repo= config= path= json q/quiet v/verbose color= wait= retries= allow-foreign-repo verify-after-write= h/help V/version
end

function __fish_backup_checkpoint_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_backup_checkpoint_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_backup_checkpoint_using_subcommand
    set -l cmd (__fish_backup_checkpoint_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l exclude -d 'Also exclude paths matching this gitignore-style pattern (repeatable)' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l tag -d 'Tag the checkpoint (repeatable)' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l run -d 'Bootstrap run this phase checkpoint belongs to; else $BACKUP_RUN_ID; else a new run at pre-ansible or when a phase repeats' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l repo -d 'Repository root [env: BACKUP_REPO] [default: ~/.dotfiles-backups]' -r -F
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l config -d 'Config file [env: BACKUP_CONFIG] [default: ~/.config/dotfiles-backup/config.toml]' -r -F
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l path -d 'Track this path instead of the configured set (repeatable)' -r -F
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l color -d 'Colour in human output: auto (a terminal and no NO_COLOR), always, never' -r -f -a "auto\t'On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`'
always\t'Always (an explicit flag outranks `NO_COLOR`, as no-color.org asks)'
never\t'Never'"
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l wait -d 'Seconds a writer waits for the repository lock [env: BACKUP_LOCK_WAIT] [default: 5]' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l retries -d 'Attempts for transient failures (unreachable external target, busy resource) [env: BACKUP_RETRIES] [default: 3]' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l verify-after-write -d 'Read back the packs a checkpoint wrote and check their hashes before committing it (true/false) [env: BACKUP_VERIFY_AFTER_WRITE] [config: repository.verify_after_write]' -r -f -a "true\t''
false\t''"
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l health-check -d 'Check readiness (repository, lock, disk, last checkpoint, quick verify); exit 1 if anything is red'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l dry-run -d 'Show what would be stored; write nothing'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l sizes -d 'Report per-root sizes, large files and exclusions'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l json -d 'Print exactly one JSON document (the envelope) on stdout'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -s q -l quiet -d 'No human summary on stdout (errors still go to stderr)'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -s v -l verbose -d 'More detail on stderr'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -l allow-foreign-repo -d 'Use a repository owned by another user (owners, setuid and setgid bits in it are not restored) [env: BACKUP_ALLOW_FOREIGN_REPO]'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -s V -l version -d 'Print version'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -f -a "auto" -d 'Checkpoint before a bootstrap phase'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -f -a "manual" -d 'A named checkpoint'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l exclude -d 'Also exclude paths matching this gitignore-style pattern (repeatable)' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l tag -d 'Tag the checkpoint (repeatable)' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l run -d 'Bootstrap run this phase checkpoint belongs to; else $BACKUP_RUN_ID; else a new run at pre-ansible or when a phase repeats' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l repo -d 'Repository root [env: BACKUP_REPO] [default: ~/.dotfiles-backups]' -r -F
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l config -d 'Config file [env: BACKUP_CONFIG] [default: ~/.config/dotfiles-backup/config.toml]' -r -F
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l path -d 'Track this path instead of the configured set (repeatable)' -r -F
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l color -d 'Colour in human output: auto (a terminal and no NO_COLOR), always, never' -r -f -a "auto\t'On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`'
always\t'Always (an explicit flag outranks `NO_COLOR`, as no-color.org asks)'
never\t'Never'"
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l wait -d 'Seconds a writer waits for the repository lock [env: BACKUP_LOCK_WAIT] [default: 5]' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l retries -d 'Attempts for transient failures (unreachable external target, busy resource) [env: BACKUP_RETRIES] [default: 3]' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l verify-after-write -d 'Read back the packs a checkpoint wrote and check their hashes before committing it (true/false) [env: BACKUP_VERIFY_AFTER_WRITE] [config: repository.verify_after_write]' -r -f -a "true\t''
false\t''"
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l dry-run -d 'Show what would be stored; write nothing'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l sizes -d 'Report per-root sizes, large files and exclusions'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l json -d 'Print exactly one JSON document (the envelope) on stdout'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -s q -l quiet -d 'No human summary on stdout (errors still go to stderr)'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -s v -l verbose -d 'More detail on stderr'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -l allow-foreign-repo -d 'Use a repository owned by another user (owners, setuid and setgid bits in it are not restored) [env: BACKUP_ALLOW_FOREIGN_REPO]'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand auto" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l exclude -d 'Also exclude paths matching this gitignore-style pattern (repeatable)' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l tag -d 'Tag the checkpoint (repeatable)' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l run -d 'Bootstrap run this phase checkpoint belongs to; else $BACKUP_RUN_ID; else a new run at pre-ansible or when a phase repeats' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l repo -d 'Repository root [env: BACKUP_REPO] [default: ~/.dotfiles-backups]' -r -F
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l config -d 'Config file [env: BACKUP_CONFIG] [default: ~/.config/dotfiles-backup/config.toml]' -r -F
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l path -d 'Track this path instead of the configured set (repeatable)' -r -F
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l color -d 'Colour in human output: auto (a terminal and no NO_COLOR), always, never' -r -f -a "auto\t'On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`'
always\t'Always (an explicit flag outranks `NO_COLOR`, as no-color.org asks)'
never\t'Never'"
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l wait -d 'Seconds a writer waits for the repository lock [env: BACKUP_LOCK_WAIT] [default: 5]' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l retries -d 'Attempts for transient failures (unreachable external target, busy resource) [env: BACKUP_RETRIES] [default: 3]' -r
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l verify-after-write -d 'Read back the packs a checkpoint wrote and check their hashes before committing it (true/false) [env: BACKUP_VERIFY_AFTER_WRITE] [config: repository.verify_after_write]' -r -f -a "true\t''
false\t''"
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l dry-run -d 'Show what would be stored; write nothing'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l sizes -d 'Report per-root sizes, large files and exclusions'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l json -d 'Print exactly one JSON document (the envelope) on stdout'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -s q -l quiet -d 'No human summary on stdout (errors still go to stderr)'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -s v -l verbose -d 'More detail on stderr'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -l allow-foreign-repo -d 'Use a repository owned by another user (owners, setuid and setgid bits in it are not restored) [env: BACKUP_ALLOW_FOREIGN_REPO]'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand manual" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand help; and not __fish_seen_subcommand_from auto manual help" -f -a "auto" -d 'Checkpoint before a bootstrap phase'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand help; and not __fish_seen_subcommand_from auto manual help" -f -a "manual" -d 'A named checkpoint'
complete -c backup-checkpoint -n "__fish_backup_checkpoint_using_subcommand help; and not __fish_seen_subcommand_from auto manual help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
