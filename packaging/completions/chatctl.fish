# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_chatctl_global_optspecs
    string join \n runtime-dir= json h/help V/version
end

function __fish_chatctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_chatctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_chatctl_using_subcommand
    set -l cmd (__fish_chatctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c chatctl -n "__fish_chatctl_needs_command" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_needs_command" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatctl -n "__fish_chatctl_needs_command" -s V -l version -d 'Print version'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "status" -d 'Version, uptime, pids, connections, rooms, rates, drops and refusals'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "who" -d 'Users (of ROOM, or all): nick, room, address, pid, connected for, idle, muted'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "rooms" -d 'Rooms with their member counts and topics'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "kick" -d 'Disconnect a user; the room is told, with the reason'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "ban" -d 'Ban an address, a network (CIDR) or a nickname; connected matches are disconnected'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "unban" -d 'Lift a ban'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "bans" -d 'Bans in force'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "mute" -d 'Keep a user\'s lines from everyone but the user'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "unmute" -d 'Lift a mute'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "mutes" -d 'Mutes in force, whether or not their user is connected'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "announce" -d 'Send a system message to every room, or to one'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "motd" -d 'Show, set (TEXT or --file) or clear the message of the day shown after login'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "reload" -d 'Read the settings and the moderation state again (like SIGHUP)'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "upgrade" -d 'Replace the running chatd\'s code without disconnecting anyone: the master executes the new binary in place (after `--check-upgrade` passes), then the broker is replaced; sessions keep their code until their clients leave. Waits for the outcome'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "shutdown" -d 'Warn everyone, wait, then stop the daemon'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "backup" -d 'Write a consistent copy of the live database (SQLite) to FILE, which must not exist'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "history" -d 'Stored lines of ROOM, oldest first (at most 10000), with their times in UTC'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "forget" -d 'Delete every stored line said under NICK (for a person who asks for it)'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "accounts" -d 'Registered nicks: list, show, reset a password, delete, grant or revoke admin'
complete -c chatctl -n "__fish_chatctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chatctl -n "__fish_chatctl_using_subcommand status" -l output -d 'Write the output to FILE atomically (for node_exporter\'s textfile collector)' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand status" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand status" -l prometheus -d 'Print the figures in the Prometheus text format'
complete -c chatctl -n "__fish_chatctl_using_subcommand status" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand who" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand who" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand who" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand rooms" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand rooms" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand rooms" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand kick" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand kick" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand kick" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand ban" -l for -d 'How long, like 30m, 12h or 7d. Default: until unbanned' -r
complete -c chatctl -n "__fish_chatctl_using_subcommand ban" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand ban" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand ban" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand unban" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand unban" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand unban" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand bans" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand bans" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand bans" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand mute" -l for -d 'How long, like 10m. Default: until unmuted' -r
complete -c chatctl -n "__fish_chatctl_using_subcommand mute" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand mute" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand mute" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand unmute" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand unmute" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand unmute" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand mutes" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand mutes" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand mutes" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand announce" -l room -r
complete -c chatctl -n "__fish_chatctl_using_subcommand announce" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand announce" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand announce" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand motd" -l file -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand motd" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand motd" -l clear
complete -c chatctl -n "__fish_chatctl_using_subcommand motd" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand motd" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand reload" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand reload" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand reload" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand upgrade" -l binary -d 'The new binary. Default: the path chatd was started from (where a package installs the new version)' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand upgrade" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand upgrade" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand upgrade" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand shutdown" -l grace -d 'Seconds between the warning and the stop' -r
complete -c chatctl -n "__fish_chatctl_using_subcommand shutdown" -l message -d 'Added to the warning' -r
complete -c chatctl -n "__fish_chatctl_using_subcommand shutdown" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand shutdown" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand shutdown" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand backup" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand backup" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand backup" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand history" -l since -d 'From this time (2026-12-01T10:00:00Z) or this long ago (2h, 3days). Default: all that is kept' -r
complete -c chatctl -n "__fish_chatctl_using_subcommand history" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand history" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand history" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand forget" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand forget" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand forget" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and not __fish_seen_subcommand_from list show reset-password delete grant revoke help" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and not __fish_seen_subcommand_from list show reset-password delete grant revoke help" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and not __fish_seen_subcommand_from list show reset-password delete grant revoke help" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and not __fish_seen_subcommand_from list show reset-password delete grant revoke help" -f -a "list" -d 'Every registered nick: created, last seen, online, admin (the default)'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and not __fish_seen_subcommand_from list show reset-password delete grant revoke help" -f -a "show" -d 'One account in detail'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and not __fish_seen_subcommand_from list show reset-password delete grant revoke help" -f -a "reset-password" -d 'Give NICK a one-time password (printed); it must be changed at the next login'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and not __fish_seen_subcommand_from list show reset-password delete grant revoke help" -f -a "delete" -d 'Delete the account (and the messages kept for it); a connected owner stays, as a guest'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and not __fish_seen_subcommand_from list show reset-password delete grant revoke help" -f -a "grant" -d 'Give NICK a role'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and not __fish_seen_subcommand_from list show reset-password delete grant revoke help" -f -a "revoke" -d 'Take a role from NICK'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and not __fish_seen_subcommand_from list show reset-password delete grant revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from list" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from list" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from show" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from show" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from reset-password" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from reset-password" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from reset-password" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from delete" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from delete" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from grant" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from grant" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from grant" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from revoke" -l runtime-dir -d 'The daemon\'s runtime directory (where control.sock is). Default: /run/chatd if a daemon serves it, else the directory chatd uses for the calling user' -r -F
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from revoke" -l json -d 'Print the answer as JSON, for scripts'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "list" -d 'Every registered nick: created, last seen, online, admin (the default)'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "show" -d 'One account in detail'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "reset-password" -d 'Give NICK a one-time password (printed); it must be changed at the next login'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete the account (and the messages kept for it); a connected owner stays, as a guest'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "grant" -d 'Give NICK a role'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Take a role from NICK'
complete -c chatctl -n "__fish_chatctl_using_subcommand accounts; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "status" -d 'Version, uptime, pids, connections, rooms, rates, drops and refusals'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "who" -d 'Users (of ROOM, or all): nick, room, address, pid, connected for, idle, muted'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "rooms" -d 'Rooms with their member counts and topics'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "kick" -d 'Disconnect a user; the room is told, with the reason'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "ban" -d 'Ban an address, a network (CIDR) or a nickname; connected matches are disconnected'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "unban" -d 'Lift a ban'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "bans" -d 'Bans in force'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "mute" -d 'Keep a user\'s lines from everyone but the user'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "unmute" -d 'Lift a mute'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "mutes" -d 'Mutes in force, whether or not their user is connected'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "announce" -d 'Send a system message to every room, or to one'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "motd" -d 'Show, set (TEXT or --file) or clear the message of the day shown after login'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "reload" -d 'Read the settings and the moderation state again (like SIGHUP)'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "upgrade" -d 'Replace the running chatd\'s code without disconnecting anyone: the master executes the new binary in place (after `--check-upgrade` passes), then the broker is replaced; sessions keep their code until their clients leave. Waits for the outcome'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "shutdown" -d 'Warn everyone, wait, then stop the daemon'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "backup" -d 'Write a consistent copy of the live database (SQLite) to FILE, which must not exist'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "history" -d 'Stored lines of ROOM, oldest first (at most 10000), with their times in UTC'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "forget" -d 'Delete every stored line said under NICK (for a person who asks for it)'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "accounts" -d 'Registered nicks: list, show, reset a password, delete, grant or revoke admin'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and not __fish_seen_subcommand_from status who rooms kick ban unban bans mute unmute mutes announce motd reload upgrade shutdown backup history forget accounts help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and __fish_seen_subcommand_from accounts" -f -a "list" -d 'Every registered nick: created, last seen, online, admin (the default)'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and __fish_seen_subcommand_from accounts" -f -a "show" -d 'One account in detail'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and __fish_seen_subcommand_from accounts" -f -a "reset-password" -d 'Give NICK a one-time password (printed); it must be changed at the next login'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and __fish_seen_subcommand_from accounts" -f -a "delete" -d 'Delete the account (and the messages kept for it); a connected owner stays, as a guest'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and __fish_seen_subcommand_from accounts" -f -a "grant" -d 'Give NICK a role'
complete -c chatctl -n "__fish_chatctl_using_subcommand help; and __fish_seen_subcommand_from accounts" -f -a "revoke" -d 'Take a role from NICK'
