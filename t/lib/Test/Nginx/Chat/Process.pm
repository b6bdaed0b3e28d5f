package Test::Nginx::Chat::Process;

# One nginx instance under test: nginx.conf generation, start (in the
# foreground, as a child of the test process), stop, error log access and
# valgrind log scanning. Used for the main instance of
# Test::Nginx::Chat::Socket and for extra instances started with
# Test::Nginx::Chat::start_nginx_with.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(cwd);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Spec;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

use Exporter 'import';
our @EXPORT_OK = qw(expand_env expand_env_deep expand_block free_port
    nginx_binary valgrind_enabled port_is_listening);

# Instances started and not yet stopped (stopped at exit).
our @Running;

# Problems found in valgrind logs, not yet reported as test failures.
our @ValgrindIssues;

my @TEMP_DIRS = qw(client_body_temp proxy_temp fastcgi_temp uwsgi_temp scgi_temp);

# ---------------------------------------------------------------------------
# Helpers

sub nginx_binary {
    return $ENV{TEST_NGINX_BINARY} if $ENV{TEST_NGINX_BINARY};
    for my $dir (split /:/, $ENV{PATH} // '') {
        next unless length $dir;
        return "$dir/nginx" if -f "$dir/nginx" && -x _;
    }
    return '/usr/sbin/nginx';
}

# nginx -v prints e.g. "nginx version: nginx/1.22.1"; returns 1022001.
my %version_cache;
sub nginx_version {
    my $bin = nginx_binary();
    return $version_cache{$bin} if exists $version_cache{$bin};
    my $out = `'$bin' -v 2>&1` // '';
    my ($maj, $min, $pat) = $out =~ m{nginx/(\d+)\.(\d+)\.(\d+)};
    return $version_cache{$bin} =
        defined $maj ? $maj * 1_000_000 + $min * 1000 + $pat : 0;
}

sub valgrind_enabled {
    my $v = $ENV{TEST_NGINX_USE_VALGRIND};
    return defined $v && $v ne '' && $v ne '0';
}

# A random unused TCP port, below the usual ephemeral range so that client
# connections are unlikely to take it before nginx binds it.
sub free_port {
    for (1 .. 200) {
        my $port = 20000 + int rand 12000;
        next if port_is_listening($port);
        my $s = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1', LocalPort => $port,
            Proto => 'tcp', Listen => 1, ReuseAddr => 1,
        ) or next;
        close $s;
        return $port;
    }
    croak "could not find a free TCP port";
}

# Replace $TEST_NGINX_FOO and ${TEST_NGINX_FOO} with the environment value.
# TEST_NGINX_RAND_PORT_<n> variables get a free port on first use. An unset
# variable is an error, unless $keep_unset is true (then it is left as is).
sub expand_env {
    my ($text, $keep_unset) = @_;
    return $text if !defined $text || ref $text;
    $text =~ s{(\$(?:\{(TEST_NGINX_\w+)\}|(TEST_NGINX_\w+)))}
              {_env_value($2 // $3, $keep_unset ? $1 : undef)}ge;
    return $text;
}

sub _env_value {
    my ($name, $fallback) = @_;
    if (!defined $ENV{$name} && $name =~ /^TEST_NGINX_RAND_PORT_\d+$/) {
        $ENV{$name} = free_port();
    }
    return $ENV{$name} if defined $ENV{$name};
    return $fallback if defined $fallback;
    die "environment variable $name is not set\n";
}

# Same as expand_env, applied to strings inside array/hash references.
sub expand_env_deep {
    my ($v) = @_;
    my $r = ref $v;
    return expand_env($v) if !$r;
    return [map { expand_env_deep($_) } @$v] if $r eq 'ARRAY';
    return { map { $_ => expand_env_deep($v->{$_}) } keys %$v } if $r eq 'HASH';
    return $v;    # Regexp, CODE, objects: untouched
}

# Sections needed to build and start the server. They are expanded before
# nginx starts; the other sections only after "--- init" ran, so that init
# code can set TEST_NGINX_* variables used by the requests and checks.
# "--- init" itself is Perl code and never expanded.
my %SERVER_SECTIONS = map { $_ => 1 } qw(main_config post_main_config
    http_config server_config config user_files server_name log_level must_die);

# Replace $TEST_NGINX_* references in the sections of a Test::Base block:
# $phase is 'server' (the server sections) or 'rest' (all others but init).
sub expand_block {
    my ($block, $phase) = @_;
    my %skip = map { $_ => 1 } qw(name description seq_num is_filtered
        blocks_object original_values init);
    for my $key (keys %$block) {
        next if $key =~ /^_/ || $skip{$key} || ref $block->{$key} ne 'ARRAY';
        next unless ($SERVER_SECTIONS{$key} ? 'server' : 'rest') eq $phase;
        $block->{$key} = [map { expand_env_deep($_) } @{ $block->{$key} }];
    }
}

# Is some socket listening on TCP port $port (any local address)?
sub port_is_listening {
    my ($port) = @_;
    my $hex = sprintf ':%04X ', $port;
    my $seen_proc = 0;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        $seen_proc = 1;
        while (my $line = <$fh>) {
            # sl local_address rem_address st ...; st 0A = LISTEN
            my @f = split ' ', $line;
            next unless @f > 3 && $f[3] eq '0A';
            return 1 if "$f[1] " =~ /\Q$hex\E$/;
        }
    }
    return 0 if $seen_proc;
    my $s = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 0.5,
    );
    return $s ? 1 : 0;
}

sub _wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = time + $timeout;
    while (1) {
        return 1 if $cond->();
        return 0 if time > $deadline;
        sleep 0.02;
    }
}

sub _child_pids {
    my ($ppid) = @_;
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        # pid (comm) state ppid ...; comm may contain spaces
        my ($pid, $parent) = $line =~ /^(\d+) \(.*\) \S+ (\d+)/ or next;
        push @kids, $pid if $parent == $ppid;
    }
    return @kids;
}

sub _slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return undef;
    binmode $fh;
    local $/;
    return scalar <$fh>;
}

sub _spew {
    my ($file, $data) = @_;
    make_path(dirname($file));
    open my $fh, '>', $file or croak "cannot write $file: $!";
    binmode $fh;
    print {$fh} $data;
    close $fh or croak "cannot write $file: $!";
}

# ---------------------------------------------------------------------------
# Instances

my @CONF_KEYS = qw(main_config post_main_config http_config server_config config);

sub new {
    my ($class, %o) = @_;
    croak "port is required" unless $o{port};
    my $root = $o{servroot} // 't/servroot';
    $root = File::Spec->rel2abs($root);
    $root =~ s{/+$}{};
    my $self = bless {
        port               => $o{port},
        servroot           => $root,
        workers            => 1,
        master             => 0,
        log_level          => 'debug',
        worker_connections => 1024,
        env                => [],
        no_root_location   => 0,
        server_name        => 'localhost',
        listen_addr        => '127.0.0.1',
        pid                => undef,
        running_conf       => undef,
        owner              => $$,
        (map { $_ => '' } @CONF_KEYS),
    }, $class;
    $self->configure(%o);
    return $self;
}

# Change settings used by the next conf_text()/start().
sub configure {
    my ($self, %o) = @_;
    for my $k (qw(workers master log_level worker_connections env no_root_location
                  server_name listen_addr), @CONF_KEYS) {
        $self->{$k} = $o{$k} if exists $o{$k};
    }
    $self->{$_} //= '' for @CONF_KEYS;
    return $self;
}

sub port     { $_[0]{port} }
sub servroot { $_[0]{servroot} }
sub pid      { $_[0]{pid} }
sub html_dir { "$_[0]{servroot}/html" }
sub error_log_path { "$_[0]{servroot}/logs/error.log" }
sub url      { my ($self, $path) = @_; "http://127.0.0.1:$self->{port}" . ($path // '/') }

# Effective master/worker settings: valgrind forces a single process.
sub _master  { valgrind_enabled() ? 0 : ($_[0]{master} ? 1 : 0) }
sub _workers { valgrind_enabled() ? 1 : ($_[0]{workers} || 1) }

sub conf_text {
    my ($self) = @_;
    my $root = $self->{servroot};
    my $c = "# generated by the test harness (t/lib); do not edit\n";
    for my $so (split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '') {
        $c .= "load_module $so;\n";
    }
    my $master = $self->_master;
    $c .= "worker_processes " . $self->_workers . ";\n";
    $c .= "daemon off;\n";
    $c .= "master_process " . ($master ? 'on' : 'off') . ";\n";
    if ($master && $> == 0) {
        $c .= "user " . ($ENV{TEST_NGINX_WORKER_USER} || 'root') . ";\n";
    }
    $c .= "error_log logs/error.log $self->{log_level};\n";
    $c .= "pid logs/nginx.pid;\n";
    for my $e (@{ $self->{env} || [] }) {
        $c .= $e =~ /\s/ ? "env '$e';\n" : "env $e;\n";
    }
    $c .= "\n$self->{main_config}\n" if $self->{main_config} =~ /\S/;
    $c .= "\nevents {\n";
    $c .= "    worker_connections $self->{worker_connections};\n";
    $c .= "    accept_mutex off;\n";
    $c .= "    use $ENV{TEST_NGINX_EVENT_TYPE};\n" if $ENV{TEST_NGINX_EVENT_TYPE};
    $c .= "}\n\nhttp {\n";
    $c .= "    access_log logs/access.log;\n";
    for my $dir (@TEMP_DIRS) {
        (my $directive = $dir) =~ s/_temp$/_temp_path/;
        $c .= "    $directive $root/$dir;\n";
    }
    $c .= "    default_type text/plain;\n";
    $c .= "    keepalive_timeout 68;\n";
    $c .= "\n$self->{http_config}\n" if $self->{http_config} =~ /\S/;
    $c .= "\n    server {\n";
    $c .= "        listen $self->{listen_addr}:$self->{port};\n";
    $c .= "        server_name $self->{server_name};\n";
    $c .= "        client_max_body_size 30M;\n";
    $c .= "\n$self->{server_config}\n" if $self->{server_config} =~ /\S/;
    $c .= "\n$self->{config}\n" if $self->{config} =~ /\S/;
    unless ($self->{no_root_location}) {
        $c .= "\n        location / {\n";
        $c .= "            root html;\n";
        $c .= "            index index.html index.htm;\n";
        $c .= "        }\n";
    }
    $c .= "    }\n}\n";
    $c .= "\n$self->{post_main_config}\n" if $self->{post_main_config} =~ /\S/;
    return $c;
}

sub is_running {
    my ($self) = @_;
    my $pid = $self->{pid} or return 0;
    my $r = waitpid($pid, WNOHANG);
    return 1 if $r == 0;
    $self->{exit_status} = $? if $r == $pid;
    $self->{pid} = undef;
    return 0;
}

# Kill an nginx left behind by an earlier, interrupted run on this servroot.
sub _kill_stale {
    my ($self) = @_;
    my $pidfile = "$self->{servroot}/logs/nginx.pid";
    my $pid = _slurp($pidfile) // return;
    ($pid) = $pid =~ /(\d+)/ or return;
    return if $self->{pid} && $pid == $self->{pid};
    my $cmd = _slurp("/proc/$pid/cmdline") // return;
    return unless $cmd =~ /nginx/ && $cmd =~ /\Q$self->{servroot}\E/;
    my @pids = ($pid, _child_pids($pid));
    kill 'QUIT', @pids;
    unless (_wait_for(sub { !kill 0, $pid }, 3)) {
        kill 'KILL', @pids;
        _wait_for(sub { !kill 0, $pid }, 3);
    }
    unlink $pidfile;
}

# Create a clean server root and write nginx.conf (does not start nginx).
sub setup {
    my ($self) = @_;
    croak "nginx is running; stop it first" if $self->is_running;
    my $root = $self->{servroot};
    $self->_kill_stale;
    # Only remove what the harness itself creates.
    remove_tree("$root/$_") for qw(conf logs html), @TEMP_DIRS;
    make_path(map { "$root/$_" } qw(conf logs html), @TEMP_DIRS);
    $self->{conf} = $self->conf_text;
    _spew("$root/conf/nginx.conf", $self->{conf});
    return $self;
}

# Create files under html/: either a "user_files" section text
# (">>> name [mtime]" lines followed by the content) or an array of
# [name, content, mtime?] entries, or a hash of name => content.
sub write_user_files {
    my ($self, $spec) = @_;
    return unless defined $spec;
    my @files;
    if (ref $spec eq 'ARRAY') {
        @files = map { [@$_] } @$spec;
    } elsif (ref $spec eq 'HASH') {
        @files = map { [$_, $spec->{$_}] } sort keys %$spec;
    } else {
        my $cur;
        for my $line (split /^/, $spec) {
            if ($line =~ /^>>>\s+(\S+)(?:\s+(\S+))?\s*$/) {
                push @files, $cur = [$1, '', $2];
            } elsif ($cur) {
                $cur->[1] .= $line;
            }
        }
    }
    for my $f (@files) {
        my ($name, $content, $mtime) = @$f;
        croak "bad user file name '$name'" if $name =~ m{(?:^|/)\.\.(?:/|$)};
        my $path = $self->html_dir . "/$name";
        _spew($path, $content // '');
        if (defined $mtime && $mtime =~ /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(?:\.(\d\d))?$/) {
            # touch(1) style [[CC]YY]MMDDhhmm[.ss] timestamp
            require POSIX;
            $mtime = POSIX::mktime($6 // 0, $5, $4, $3, $2 - 1, $1 - 1900);
        }
        utime $mtime, $mtime, $path if defined $mtime && $mtime =~ /^\d+$/;
    }
}

sub _command {
    my ($self) = @_;
    my $root = $self->{servroot};
    my @cmd = (nginx_binary(), '-p', "$root/", '-c', 'conf/nginx.conf');
    # -e (startup error log) exists since nginx 1.19.5
    push @cmd, '-e', 'logs/error.log' if nginx_version() >= 1_019_005;
    return @cmd unless valgrind_enabled();

    my $opts = $ENV{TEST_NGINX_USE_VALGRIND};
    my @vg = $opts =~ /^\d+$/ ? ('--tool=memcheck', '--leak-check=full') : split ' ', $opts;
    push @vg, '--error-exitcode=99', '--gen-suppressions=all', '--num-callers=40',
        "--log-file=$root/logs/valgrind.%p.log";
    for my $supp ('t/valgrind.suppress', 'valgrind.suppress') {
        if (-f $supp) {
            push @vg, '--suppressions=' . File::Spec->rel2abs($supp);
            last;
        }
    }
    return ('valgrind', @vg, @cmd);
}

sub start_timeout { valgrind_enabled() ? 60 : ($ENV{TEST_NGINX_START_TIMEOUT} || 5) }

# Last lines of error.log (and of stderr output) for diagnostics.
sub log_tail {
    my ($self, $n) = @_;
    $n //= 30;
    my $out = '';
    for my $f ('logs/error.log', 'logs/stderr.log') {
        my $text = _slurp("$self->{servroot}/$f") // next;
        next unless length $text;
        my @lines = split /\n/, $text;
        @lines = @lines[-$n .. -1] if @lines > $n;
        $out .= "---- last lines of $self->{servroot}/$f ----\n" . join("\n", @lines) . "\n";
    }
    return length $out ? $out : "(no nginx log output in $self->{servroot}/logs)\n";
}

# Fork and exec nginx in the foreground. With expect_death, wait for it to
# exit and return its wait status; otherwise wait until it listens on the
# port (dies with log output on failure) and return the pid.
sub launch {
    my ($self, %o) = @_;
    my $root = $self->{servroot};
    my $port = $self->{port};
    unless (_wait_for(sub { !port_is_listening($port) }, 2)) {
        die "cannot start nginx: TCP port $port is already in use by another "
            . "process (set TEST_NGINX_SERVER_PORT to use another port)\n";
    }
    my @cmd = $self->_command;
    my $pid = fork;
    die "fork failed: $!\n" unless defined $pid;
    if (!$pid) {
        # Child: keep nginx out of the test's stdout (TAP stream).
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$root/logs/stderr.log" or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        { no warnings qw(exec); exec { $cmd[0] } @cmd; }
        print STDERR "cannot exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    $self->{exit_status} = undef;
    push @Running, $self;
    _install_signal_handlers();

    if ($o{expect_death}) {
        my $exited = _wait_for(sub { !$self->is_running }, $o{timeout} // start_timeout());
        return $self->{exit_status} if $exited;
        return undef;    # still alive; caller stops it
    }

    my $deadline = time + start_timeout();
    while (1) {
        unless ($self->is_running) {
            my $st = $self->{exit_status} // 0;
            my $how = $st & 127 ? "killed by signal " . ($st & 127) : "exit code " . ($st >> 8);
            die "nginx failed to start ($how)\ncommand: @cmd\n" . $self->log_tail;
        }
        last if port_is_listening($port);
        if (time > $deadline) {
            $self->stop;
            die "nginx did not listen on port $port within " . start_timeout()
                . "s\n" . $self->log_tail;
        }
        sleep 0.02;
    }
    $self->{running_conf} = $self->{conf};
    return $pid;
}

# setup + launch
sub start {
    my ($self, %o) = @_;
    $self->setup;
    $self->write_user_files($o{user_files}) if $o{user_files};
    return $self->launch;
}

# Stop nginx: QUIT (graceful), then TERM, then KILL; reap the process,
# wait for the port to be released and scan valgrind logs.
sub stop {
    my ($self) = @_;
    local $?;    # may be called from END
    my $pid = $self->{pid};
    @Running = grep { $_ != $self } @Running;
    return unless $pid;
    if ($self->is_running) {
        my $quit_wait = valgrind_enabled() ? 30 : 5;
        kill 'QUIT', $pid;
        unless (_wait_for(sub { !$self->is_running }, $quit_wait)) {
            my @kids = _child_pids($pid);
            kill 'TERM', $pid, @kids;
            unless (_wait_for(sub { !$self->is_running }, 3)) {
                kill 'KILL', $pid, _child_pids($pid), @kids;
                _wait_for(sub { !$self->is_running }, 3);
            }
        }
    }
    $self->{pid} = undef;
    $self->{running_conf} = undef;
    _wait_for(sub { !port_is_listening($self->{port}) }, 3);
    $self->scan_valgrind_logs if valgrind_enabled();
    return $self->{exit_status};
}

sub error_log_size {
    my ($self) = @_;
    return -s $self->error_log_path || 0;
}

# Text of error.log from byte offset $from (default 0) to the end.
sub read_error_log {
    my ($self, $from) = @_;
    my $text = _slurp($self->error_log_path) // return '';
    $from //= 0;
    return '' if $from >= length $text;
    return substr($text, $from);
}

sub error_log { $_[0]->read_error_log(0) }

sub access_log_path { "$_[0]{servroot}/logs/access.log" }

# Text of access.log from byte offset $from (default 0) to the end.
sub read_access_log {
    my ($self, $from) = @_;
    my $text = _slurp($self->access_log_path) // return '';
    $from //= 0;
    return '' if $from >= length $text;
    return substr($text, $from);
}

# Pids of the master's children (the workers, old ones still exiting too).
sub worker_pids {
    my ($self) = @_;
    return () unless $self->{pid} && $self->_master;
    return sort { $a <=> $b } _child_pids($self->{pid});
}

# "nginx -s reload": SIGHUP to the master (needs master => 1).
sub reload {
    my ($self) = @_;
    croak "reload: nginx is not running" unless $self->is_running;
    croak "reload: no master process" unless $self->_master;
    return kill 'HUP', $self->{pid};
}

# Parse valgrind log files; problems whose stack mentions a frame matching
# TEST_NGINX_VALGRIND_FRAME (default "ngx_http_chat") are added to
# @ValgrindIssues: definitely lost blocks, invalid reads/writes/frees and
# uses of uninitialised values.
sub scan_valgrind_logs {
    my ($self) = @_;
    my $frame = $ENV{TEST_NGINX_VALGRIND_FRAME} // 'ngx_http_chat';
    for my $file (glob "$self->{servroot}/logs/valgrind.*.log") {
        my $text = _slurp($file) // next;
        for my $rec (_valgrind_records($text)) {
            my $head = $rec->[0];
            my $body = join "\n", @$rec;
            my $kind;
            if ($head =~ /definitely lost in loss record/) {
                $kind = 'leak';
            } elsif ($head =~ /^Invalid (?:read|write|free)|uninitialised|Mismatched free/) {
                $kind = 'error';
            }
            next unless $kind;
            next if length $frame && $body !~ /$frame/;
            push @ValgrindIssues, "$file:\n$body";
        }
        # Keep the file for inspection but never scan it twice.
        rename $file, "$file.seen";
    }
}

# Emit one failing test (Test::More) for the problems collected so far.
sub report_valgrind_issues {
    my @issues = splice @ValgrindIssues;
    return unless @issues;
    require Test::More;
    my $frame = $ENV{TEST_NGINX_VALGRIND_FRAME} // 'ngx_http_chat';
    my $what = length $frame ? " involving /$frame/" : '';
    Test::More::fail("valgrind: " . @issues . " problem(s)$what");
    for my $issue (@issues) {
        my @l = split /\n/, $issue;
        @l = (@l[0 .. 39], '...') if @l > 40;
        Test::More::diag(join "\n", @l);
    }
}

# Split a valgrind log into records (lists of lines without the ==pid== prefix).
sub _valgrind_records {
    my ($text) = @_;
    my (@recs, $cur);
    for my $line (split /\n/, $text) {
        next unless $line =~ /^==\d+==(?: (.*))?$/;
        my $l = $1 // '';
        if ($l =~ /^\s*$/) {
            push @recs, $cur if $cur;
            undef $cur;
            next;
        }
        push @{ $cur ||= [] }, $l;
    }
    push @recs, $cur if $cur;
    return @recs;
}

# ---------------------------------------------------------------------------
# Cleanup

sub stop_all {
    return if $ENV{TEST_NGINX_NO_CLEAN};
    for my $inst (reverse @Running) {
        next unless $inst->{owner} == $$;
        $inst->stop;
    }
}

my $handlers_installed;
sub _install_signal_handlers {
    return if $handlers_installed++;
    for my $sig (qw(INT TERM HUP)) {
        my $cur = $SIG{$sig};
        next if defined $cur && $cur ne '' && $cur ne 'DEFAULT';
        $SIG{$sig} = sub {
            stop_all();
            $SIG{$sig} = 'DEFAULT';
            kill $sig, $$;
        };
    }
}

END {
    local $?;
    stop_all();
}

1;

__END__

=head1 NAME

Test::Nginx::Chat::Process - one nginx instance under test

=head1 SYNOPSIS

    my $p = Test::Nginx::Chat::Process->new(
        port => 1990, servroot => 't/servroot_b',
        http_config => '...', config => 'location /t { return 200; }',
    );
    $p->start;                 # dies with the error.log tail on failure
    print $p->read_error_log($offset);
    $p->stop;

=head1 DESCRIPTION

nginx always runs with C<daemon off> as a child of the test process, so its
pid is known without reading the pid file and it can always be reaped.
Settings: C<port servroot workers master log_level worker_connections env
no_root_location server_name listen_addr> and the configuration snippets
C<main_config post_main_config http_config server_config config>.

Besides C<start>, C<stop>, C<error_log>/C<read_error_log($offset)>:
C<read_access_log($offset)>, C<worker_pids> (the master's children) and
C<reload> (SIGHUP to the master, as C<nginx -s reload>).

Running instances are stopped at exit (unless C<TEST_NGINX_NO_CLEAN> is set)
and on SIGINT/SIGTERM/SIGHUP when no other handler is installed.

=cut
