package ChatStack;

# What every nginx-chat test file shares: the core module's configuration
# for the datastores that "./build.sh test" started (passed in TEST_NGINX_*
# variables), a block preprocessor that adds it, tokens made by hand
# (forged, expired, alg:none), and access to the datastores themselves
# (redis-cli, mariadb, SIGSTOP/SIGCONT and restarts of a server).

use strict;
use warnings;

use Digest::SHA qw(hmac_sha256);
use MIME::Base64 qw(encode_base64url);
use File::Basename ();
use File::Spec ();
use JSON::PP ();
use Time::HiRes ();

use Exporter 'import';
our @EXPORT = qw(chat_http_config chat_main_config chat_block
                 make_jwt redis_cmd mysql_cmd freeze thaw json_decode
                 json_encode unique_name register_user login_user
                 user_token api file_port read_metrics parse_metrics
                 metric_sum fork_job job_done job_result
                 can_restart_servers stop_server start_server
                 server_keeps_data sql sql_user token_user env_users
                 notification_id upload_png
                 stream_entries event_with group_info wait_group
                 group_settled
                 stream_mark events_since
                 chat_nodes
                 stack_start stack_stop raw_request);

sub env {
    my ($name, $default) = @_;
    my $v = $ENV{"TEST_NGINX_$name"};
    return defined $v && $v ne '' ? $v : $default;
}

sub chat_main_config {
    return "thread_pool chat_cpu threads=2;\n"
         . "thread_pool chat_mongo threads=4;\n";
}

# MariaDB's test database is new every run, MongoDB's is not: each test
# file gets a database of its own, so ids that repeat across runs never
# meet stale documents
my $MongoDatabase;

sub mongo_database {
    $MongoDatabase //= env('MONGO_DATABASE', 'chat_test') . '_' . $$;
    return $MongoDatabase;
}

# the datastore part of http{}; timeouts short so outage tests stay quick
sub chat_http_config {
    my (%opt) = @_;

    # under valgrind everything is many times slower, start-up above all
    my $slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 10 : 1;
    my $mysql_timeout = $opt{mysql_timeout} // (3 * $slow) . 's';
    my $redis_timeout = $opt{redis_timeout} // (2 * $slow) . 's';
    my $connect_timeout = (1 * $slow) . 's';
    my $mongo_port = env('MONGO_PORT', 27117);
    my $mongo_db = mongo_database();

    return <<"EOF";
    chat_mysql 127.0.0.1:@{[env('MYSQL_PORT', 13306)]} user=chat password=chatpw database=@{[env('MYSQL_DATABASE', 'chat_test')]} pool=4;
    chat_mysql_timeout $mysql_timeout;
    chat_mysql_connect_timeout $connect_timeout;
    chat_redis 127.0.0.1:@{[env('REDIS_PORT', 16379)]};
    chat_redis_timeout $redis_timeout;
    chat_mongo "mongodb://127.0.0.1:$mongo_port/?serverSelectionTimeoutMS=2000&connectTimeoutMS=1000&socketTimeoutMS=3000" database=$mongo_db;
    chat_thread_pool chat_cpu;
    chat_mongo_thread_pool chat_mongo;
    chat_jwt_secret "@{[env('JWT_SECRET', 'change-me-nginx-chat-secret')]}";
    chat_development on;
EOF
}

# a block preprocessor: prepend the shared configuration. Passed as
# add_block_preprocessor(\&chat_block), a form that Test::Nginx::Socket's
# (&) prototype takes too
# $n nginx instances of two workers on the test stack's datastores, each
# serving $config; %o: http (more lines for http{}), and any option of
# start_nginx_with()
sub chat_nodes {
    my ($n, $config, %o) = @_;
    my $http = chat_http_config() . (delete $o{http} // '');
    require Test::Nginx::Chat;
    return map {
        Test::Nginx::Chat::start_nginx_with(workers => 2, master => 1,
                                            main_config => chat_main_config(),
                                            http_config => $http,
                                            config => $config, %o)
    } 1 .. $n;
}

sub chat_block {
    my ($block) = @_;
    my $http = $block->http_config // '';
    my $main = $block->main_config // '';

    $block->set_value(http_config => chat_http_config() . $http);
    $block->set_value(main_config => chat_main_config() . $main);
}


# an HS256 (or any) JWT; header and claims are hashrefs
sub make_jwt {
    my ($header, $claims, $secret) = @_;
    my $json = JSON::PP->new->canonical;

    # a fractional exp (Time::HiRes) is not a JWT NumericDate libjwt takes
    $claims = { %$claims, exp => int($claims->{exp}) } if defined $claims->{exp};
    my $h = encode_base64url($json->encode($header));
    my $c = encode_base64url($json->encode($claims));
    my $alg = $header->{alg} // '';
    my $sig = '';

    if ($alg eq 'HS256') {
        $sig = encode_base64url(hmac_sha256("$h.$c", $secret));
    }

    return "$h.$c.$sig";
}

sub json_decode {
    my ($text) = @_;
    return eval { JSON::PP->new->utf8->allow_nonref->decode($text) };
}

sub json_encode {
    my ($data) = @_;
    return JSON::PP->new->utf8->canonical->encode($data);
}

sub redis_cmd {
    my (@args) = @_;
    my $port = env('REDIS_PORT', 16379);
    open(my $fh, '-|', 'redis-cli', '-p', $port, '--raw', @args)
        or die "redis-cli: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    $out //= '';
    $out =~ s/\n+\z//;
    return $out;
}

sub mysql_cmd {
    my ($sql) = @_;
    my $port = env('MYSQL_PORT', 13306);
    my $db = env('MYSQL_DATABASE', 'chat_test');
    open(my $fh, '-|', 'mariadb', '--no-defaults', '-uchat', '-pchatpw',
         '-h127.0.0.1', "-P$port", '--protocol=tcp', '-N', '-B', $db,
         '-e', $sql)
        or die "mariadb: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    $out //= '';
    $out =~ s/\n+\z//;
    return $out;
}

sub server_pid {
    my ($which) = @_;
    my $file = env(uc($which) . '_PID', '');
    die "no pid file for $which (TEST_NGINX_" . uc($which) . "_PID)\n"
        unless $file && -f $file;
    open(my $fh, '<', $file) or die "$file: $!";
    my $pid = <$fh>;
    close $fh;
    chomp $pid;
    return $pid;
}

# a process that is gone, or a zombie nobody has reaped yet
sub process_alive {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    open(my $fh, '<', "/proc/$pid/stat") or return 0;
    my $stat = <$fh> // '';
    close $fh;
    return $stat =~ /^\d+ \(.*\) Z/ ? 0 : 1;
}

my %server_port = (mariadb => 'MYSQL_PORT', redis => 'REDIS_PORT',
                   mongo => 'MONGO_PORT');

sub port_open {
    my ($port) = @_;
    require IO::Socket::INET;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 0.5);
    close $s if $s;
    return $s ? 1 : 0;
}

# Whether the servers of "./build.sh test" can be restarted from here:
# the work directory and the pid files it exports.
sub can_restart_servers {
    my $work = env('WORK', '');
    return 0 unless $work && -d $work && -f build_script();
    for my $which (qw(mariadb mongo)) {
        my $file = env(uc($which) . '_PID', '');
        return 0 unless $file && -f $file;
    }
    return 1;
}

# Does the server keep its data over a restart?  The MongoDB stand-in
# the test stack uses where no mongod exists holds it in memory.
sub server_keeps_data {
    my ($which) = @_;
    my $pid = server_pid($which);
    open(my $fh, '<', "/proc/$pid/cmdline") or return 1;
    my $cmd = <$fh> // '';
    close $fh;
    return $cmd =~ /mongo-server\.mjs/ ? 0 : 1;
}

# A real restart of a datastore, in two steps: stop_server() shuts the
# server down (SIGTERM, as an administrator's stop) and waits until the
# process is gone and its port closed; start_server() starts it again with
# "./build.sh datastores", the way the test stack started it: same port,
# same data directory, same options.
sub stop_server {
    my ($which) = @_;
    my $pid = server_pid($which);
    my $port = env($server_port{$which} // die("no server $which\n"));

    kill 'CONT', $pid;      # a frozen server cannot shut down
    kill 'TERM', $pid;

    my $until = Time::HiRes::time() + 60;
    Time::HiRes::sleep(0.1)
        while process_alive($pid) && Time::HiRes::time() < $until;

    if (process_alive($pid)) {
        kill 'KILL', $pid;
        Time::HiRes::sleep(0.5);
    }

    $until = Time::HiRes::time() + 10;
    Time::HiRes::sleep(0.1)
        while port_open($port) && Time::HiRes::time() < $until;

    die "$which (pid $pid) did not stop\n" if port_open($port);
}

sub build_script {
    return File::Spec->rel2abs(File::Spec->catfile(
               File::Basename::dirname(__FILE__), '..', '..', 'build.sh'));
}

sub start_server {
    my ($which) = @_;
    my $work = env('WORK', '') or die "TEST_NGINX_WORK is not set\n";
    my $script = build_script();

    local $ENV{CHAT_WORK} = $work;
    local $ENV{CHAT_MYSQL_PORT} = env('MYSQL_PORT', 13306);
    local $ENV{CHAT_REDIS_PORT} = env('REDIS_PORT', 16379);
    local $ENV{CHAT_MONGO_PORT} = env('MONGO_PORT', 27117);

    my $out = `bash '$script' datastores 2>&1`;
    die "restarting $which failed:\n$out" if $?;

    my $port = env($server_port{$which});
    my $until = Time::HiRes::time() + 30;
    Time::HiRes::sleep(0.1)
        until port_open($port) || Time::HiRes::time() > $until;
    die "$which did not come back on port $port\n" unless port_open($port);
}

# SIGSTOP a datastore: it keeps its sockets but answers nothing.  A
# process stops thread by thread after kill() returns, so this waits until
# every thread of it is seen stopped ("T" in /proc/<pid>/task/*/stat).
sub freeze {
    my ($which) = @_;
    my $pid = server_pid($which);
    kill 'STOP', $pid;

    for (1 .. 200) {
        my $running = 0;
        for my $stat (glob("/proc/$pid/task/*/stat")) {
            open(my $fh, '<', $stat) or next;
            my $line = <$fh> // '';
            close $fh;
            $running++ if $line =~ /^\d+ \(.*\) ([^T])/s;
        }
        return if !$running;
        select(undef, undef, undef, 0.005);
    }

    die "$which (pid $pid) did not stop\n";
}

sub thaw {
    my ($which) = @_;
    kill 'CONT', server_pid($which);
}

my $seq = 0;

# names unique across runs, so tests never collide with earlier data
sub unique_name {
    my ($prefix) = @_;
    $seq++;
    return sprintf('%s%x%x%d', $prefix // 'u', time(), $$, $seq);
}

# A port for a test file's own nginx, derived from the stack's ports so
# that checkouts run with different CHAT_* ports never meet: the gateway
# port (CHAT_HTTP_PORT, or TEST_NGINX_STACK_PORT from build.sh) + 100 + $n,
# $n told apart by the files that use it.  Without either, a free port.
sub file_port {
    my ($n) = @_;
    my $base = $ENV{CHAT_HTTP_PORT} || env('STACK_PORT', '');
    require Test::Nginx::Chat::Process;
    return Test::Nginx::Chat::Process::free_port() unless $base;
    return $base + 100 + ($n // 0);
}

# ---- /metrics (Prometheus text)

# { name => [ [ { label => value, ... }, value ], ... ] }
sub parse_metrics {
    my ($text) = @_;
    my %m;
    for my $line (split /\n/, $text // '') {
        next if $line =~ /^\s*(?:#|$)/;
        my ($name, $labels, $value) =
            $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/
            or next;
        my %l;
        while (($labels // '') =~ /([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g) {
            $l{$1} = $2;
        }
        push @{ $m{$name} }, [\%l, $value + 0];
    }
    return \%m;
}

# the parsed /metrics of $url, undef unless it answers 200
sub read_metrics {
    my ($url) = @_;
    require Test::Nginx::Chat;
    my $res = Test::Nginx::Chat::http_request(GET => $url, {}, undef, 5);
    return undef unless ($res->{status} // 0) == 200;
    return parse_metrics($res->{body});
}

# the sum of the samples of $name whose labels include %want (other labels,
# e.g. per worker, are summed over); undef when there is no such sample
sub metric_sum {
    my ($m, $name, %want) = @_;
    my $sum;
    for my $sample (@{ ($m // {})->{$name} // [] }) {
        my ($labels, $value) = @$sample;
        next if grep { ($labels->{$_} // "\0") ne $want{$_} } keys %want;
        $sum = ($sum // 0) + $value;
    }
    return $sum;
}

# ---- work in a child process (load generators, probes)

# runs $code in a child; what it returns (a reference) comes back as JSON
# through a file, however large
sub fork_job {
    my ($code) = @_;
    require File::Temp;
    require POSIX;
    my ($fh, $file) = File::Temp::tempfile('chat-job-XXXXXX', TMPDIR => 1);
    close $fh;
    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        my $out = eval { $code->() };
        $out = { error => "$@" } if $@;
        if (open(my $w, '>', $file)) {
            print {$w} json_encode($out);
            close $w;
        }
        POSIX::_exit(0);    # no END blocks: the parent owns nginx
    }

    return { pid => $pid, file => $file };
}

# has the child finished (without waiting)?
sub job_done {
    my ($job) = @_;
    return 1 if $job->{reaped};
    require POSIX;
    return 0 unless waitpid($job->{pid}, POSIX::WNOHANG()) == $job->{pid};
    $job->{reaped} = 1;
    return 1;
}

# waits for the child; its result (undef if it died)
sub job_result {
    my ($job) = @_;
    unless ($job->{reaped}) {
        waitpid($job->{pid}, 0);
        $job->{reaped} = 1;
    }
    open(my $fh, '<', $job->{file}) or return undef;
    local $/;
    my $text = <$fh>;
    close $fh;
    unlink $job->{file};
    return json_decode($text // '');
}

# ---- the user service, through the file's running nginx

# where api() sends a path: the file's main test instance unless set,
# e.g. $ChatStack::Base = $node->url('') for a start_nginx_with() node
our $Base;

# an API call; returns (status, decoded body, response)
sub api {
    my ($method, $path, $token, $body, $headers) = @_;
    require Test::Nginx::Chat;
    $path = "$Base$path" if defined $Base && $path =~ m{^/};
    my %h = %{ $headers // {} };
    $h{Authorization} = "Bearer $token" if defined $token;
    $h{'Content-Type'} //= 'application/json' if defined $body;
    $body = json_encode($body) if ref $body;
    my $res = Test::Nginx::Chat::http_request($method, $path, \%h, $body, 10);
    return ($res->{status} // 0, json_decode($res->{body} // ''), $res);
}

# a new user with unique names; returns its id, email, username, password
sub register_user {
    my (%opt) = @_;
    my $name = $opt{username} // unique_name('u');
    my $user = {
        email    => $opt{email} // "$name\@example.com",
        username => $name,
        password => $opt{password} // 'Secret#123',
        (exists $opt{display_name}
            ? (display_name => $opt{display_name}) : ()),
    };
    my ($status, $body) = api(POST => '/api/auth/register', undef, $user);
    die "register $name: $status\n" unless $status == 201;
    $user->{id} = $body->{id};
    return $user;
}

sub login_user {
    my ($user) = @_;
    my ($status, $body) = api(POST => '/api/auth/login/json', undef,
                              { email => $user->{email},
                                password => $user->{password} });
    die "login $user->{email}: $status\n" unless $status == 200;
    return $body->{access_token};
}

# entries of a Redis stream: stream_entries('XRANGE', $stream, $start,
# $end, ...) or 'XREVRANGE'; each [id, { field => value }] (key, value,
# traceparent, ...)
sub stream_entries {
    my (@args) = @_;
    my @lines = split /\n/, redis_cmd(@args);
    my @entries;

    # redis-cli --raw prints an entry as its id, then its fields and values
    while (@lines) {
        my $id = shift @lines;
        next unless $id =~ /^\d+-\d+$/;
        my %f;
        while (@lines >= 2 && $lines[0] !~ /^\d+-\d+$/) {
            my ($k, $v) = splice @lines, 0, 2;
            $f{$k} = $v;
        }
        push @entries, [$id, \%f];
    }

    return @entries;
}

# a stream's last entry now: what a file's own entries come after
sub stream_mark {
    my ($stream) = @_;
    return (split /\n/, redis_cmd('XREVRANGE', $stream, '+', '-', 'COUNT',
                                  '1'))[0] // '0-0';
}

# the events of a type after $mark: [key, decoded value] each
sub events_since {
    my ($stream, $mark, $type) = @_;
    my @found;
    for my $e (stream_entries('XRANGE', $stream, "($mark", '+')) {
        my $value = json_decode($e->[1]{value} // '') or next;
        push @found, [$e->[1]{key}, $value]
            if ($value->{__event_type__} // '') eq $type;
    }
    return @found;
}

# the newest of the last 500 entries of a stream whose value holds
# $needle: (key, value)
sub event_with {
    my ($stream, $needle) = @_;
    for my $e (stream_entries('XREVRANGE', $stream, '+', '-', 'COUNT', 500)) {
        my ($key, $value) = @{ $e->[1] }{qw(key value)};
        return ($key, $value) if index($value // '', $needle) >= 0;
    }
    die "no event with $needle in $stream\n";
}

# a profile image upload through api(): a small PNG as the multipart
# field "file"; returns api()'s (status, body, response) and the bytes sent
sub upload_png {
    my ($token) = @_;
    my $png = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR" . join('', map { chr } 0 .. 255);
    my $b = 'XyZzy' . int(rand(1e9));
    my $body = "--$b\r\nContent-Disposition: form-data; name=\"file\"; "
               . "filename=\"me.png\"\r\nContent-Type: image/png\r\n\r\n"
               . "$png\r\n--$b--\r\n";
    my @res = api(POST => '/api/profile/me/image', $token, $body,
                  { 'Content-Type' => "multipart/form-data; boundary=$b" });
    return (@res, $png);
}

# a user row made directly in MariaDB, for the other services' tests;
# returns its id and (unique) name
sub sql_user {
    my ($prefix) = @_;
    my $name = unique_name($prefix // 'su');
    my $id = mysql_cmd("INSERT INTO users (email, password_hash, username, "
        . "is_online, is_active, created_at, updated_at) VALUES "
        . "('$name\@example.com', 'x', '$name', 0, 1, UTC_TIMESTAMP(), "
        . "UTC_TIMESTAMP()); SELECT LAST_INSERT_ID()");
    $id =~ s/\s+\z//;
    die "no user id: $id\n" unless $id =~ /^\d+$/;
    return wantarray ? ($id, $name) : $id;
}

# mysql_cmd's output without trailing white space
sub sql {
    my $out = mysql_cmd(@_);
    $out =~ s/\s+\z//;
    return $out;
}

# a user row made directly, with a token: { id, name, token }
sub token_user {
    my ($id, $name) = sql_user(@_);
    return { id => $id, name => $name, token => user_token($id) };
}

# users made directly for a file's blocks: for each letter X,
# TEST_NGINX_X (the id), TEST_NGINX_X_NAME and TEST_NGINX_X_TOKEN; ids
# ascend in the order given
sub env_users {
    my ($prefix, @who) = @_;
    for my $x (@who) {
        my $u = token_user($prefix);
        $ENV{"TEST_NGINX_$x"} = $u->{id};
        $ENV{"TEST_NGINX_${x}_NAME"} = $u->{name};
        $ENV{"TEST_NGINX_${x}_TOKEN"} = $u->{token};
    }
}

# a consumer group's fields in XINFO GROUPS of a stream (redis-cli --raw:
# name, <name>, consumers, <n>, ... for each group); {} without it
sub group_info {
    my ($stream, $group) = @_;
    my @lines = split /\n/, redis_cmd('XINFO', 'GROUPS', $stream);
    my (%info, $in);
    for (my $i = 0; $i + 1 < @lines; $i += 2) {
        $in = $lines[$i + 1] eq $group if $lines[$i] eq 'name';
        $info{$lines[$i]} = $lines[$i + 1] if $in;
    }
    return \%info;
}

# wait (at most $secs, 5) until a consumer has made its group on a stream
sub wait_group {
    my ($group, $stream, $secs) = @_;
    my $until = Time::HiRes::time() + ($secs // 5);
    Time::HiRes::sleep(0.1)
        until Time::HiRes::time() > $until
              || defined group_info($stream, $group)->{name};
}

# has the group read everything of both event streams, and settled it?
# (waits at most 20 s)
sub group_settled {
    my ($group) = @_;
    for (1 .. 200) {
        my $idle = 1;
        for my $stream ('friend.events', 'message.events') {
            my $last = (split /\n/, redis_cmd('XREVRANGE', $stream, '+', '-',
                                              'COUNT', '1'))[0] // '0-0';
            my $info = group_info($stream, $group);
            $idle = 0 unless ($info->{'last-delivered-id'} // '') eq $last
                             && ($info->{pending} // 1) == 0;
        }
        return 1 if $idle;
        Time::HiRes::sleep(0.1);
    }
    return 0;
}

# a notification's id, derived from its stream entry "<ms>-<seq>" as the
# consumer derives it
sub notification_id {
    my ($stream, $entry) = @_;
    my ($ms, $seq) = split /-/, $entry;
    my $tag = $stream eq 'friend.events' ? 'f' : 'm';
    return unpack('H*', pack('N', int($ms / 1000)) . $tag
                        . pack('n', $ms % 1000) . pack('C', $seq >> 32)
                        . pack('N', $seq & 0xffffffff));
}

# a token for a user id without the user service (for other services)
sub user_token {
    my ($id, $email, %claims) = @_;
    return make_jwt({ alg => 'HS256', typ => 'JWT' },
                    { sub => "$id", email => $email // "u$id\@example.com",
                      type => 'access', exp => time() + 3600, %claims },
                    env('JWT_SECRET', 'change-me-nginx-chat-secret'));
}

# ---- the shipped stack (conf/nginx.conf) on ports of its own

# conf/nginx.conf and chat-errors.conf rendered as build.sh renders them,
# under $prefix, then nginx started on free ports.  Options: rate => the
# limit per minute (0, the default: none).  Returns { prefix, port =>
# { http, user, friend, msg, notify }, base => gateway URL }.
sub stack_start {
    my ($prefix, %o) = @_;
    require Cwd;
    require File::Path;
    require Test::Nginx::Chat;
    require Test::Nginx::Chat::Process;

    my $top = Cwd::getcwd();
    my $nginx = $ENV{TEST_NGINX_BINARY} // '/usr/sbin/nginx';
    my %port = map { $_ => Test::Nginx::Chat::Process::free_port() }
               qw(http user friend msg notify);
    my $rate = $o{rate} // 0;

    File::Path::remove_tree($prefix);
    File::Path::make_path("$prefix/conf", "$prefix/logs", "$prefix/tmp");

    open(my $in, '<', "$top/conf/nginx.conf") or die "conf: $!";
    my $conf = do { local $/; <$in> };
    close $in;

    # as build.sh renders the template for the stack of "./build.sh test"
    my %token = (
        PREFIX => $prefix,
        LOAD_MODULES => join("\n", map { "load_module $_;" }
                             split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // ''),
        DOCS => ($ENV{TEST_NGINX_WORK} // "$top/.work") . '/docs',
        HTTP_PORT => $port{http}, USER_PORT => $port{user},
        FRIEND_PORT => $port{friend}, MSG_PORT => $port{msg},
        NOTIFY_PORT => $port{notify},
        MYSQL_HOST => '127.0.0.1', MYSQL_USER => 'chat',
        MYSQL_PASSWORD => 'chatpw',
        MYSQL_PORT => env('MYSQL_PORT', 13306),
        MYSQL_DATABASE => env('MYSQL_DATABASE', 'chat_test'),
        REDIS_PORT => env('REDIS_PORT', 16379),
        MONGO_URI => 'mongodb://127.0.0.1:' . env('MONGO_PORT', 27117)
                     . '/?serverSelectionTimeoutMS=3000',
        MONGO_DATABASE => mongo_database(),
        JWT_SECRET => env('JWT_SECRET', 'change-me-nginx-chat-secret'),
        DEVELOPMENT => 'chat_development on;',
        RATE_LIMIT => $rate || 100, RATE_BURST => ($rate || 100) - 1,
        LIMIT_KEY => $rate ? '$binary_remote_addr' : '""',
    );
    $conf =~ s/\@([A-Z_]+)\@/$token{$1} \/\/ die "no value for $1\n"/ge;

    open(my $out, '>', "$prefix/conf/nginx.conf") or die "conf: $!";
    print {$out} $conf;
    close $out;

    system('cp', "$top/conf/chat-errors.conf", "$prefix/conf/") == 0
        or die "cp failed\n";

    my @cmd = ($nginx, '-p', "$prefix/", '-c', 'conf/nginx.conf', '-e',
               'logs/error.log');
    my $tested = system(@cmd, '-t', '-q') == 0;

    system(@cmd) == 0 or die "nginx did not start\n";

    my $base = "http://127.0.0.1:$port{http}";

    for (1 .. 50) {
        last if (Test::Nginx::Chat::http_request(GET => "$base/health")
                 ->{status} // 0) == 200;
        Time::HiRes::sleep(0.1);
    }

    return { prefix => $prefix, port => \%port, base => $base,
             tested => $tested };
}


sub stack_stop {
    my ($stack) = @_;
    open(my $fh, '<', "$stack->{prefix}/logs/nginx.pid") or return 0;
    my $pid = <$fh>;
    close $fh;
    chomp $pid;
    kill 'QUIT', $pid;
    for (1 .. 50) { last unless kill 0, $pid; Time::HiRes::sleep(0.1) }
    return !kill(0, $pid);
}

# bytes as they are to 127.0.0.1:$port (a request nginx may refuse before
# parsing it); the parsed response, or undef
sub raw_request {
    my ($port, $bytes, $timeout) = @_;
    require Test::Nginx::Chat::HTTP;
    my $deadline = Time::HiRes::time() + ($timeout // 5);
    my ($sock) = Test::Nginx::Chat::HTTP::connect_tcp('127.0.0.1', $port,
                                                       $deadline)
        or return undef;
    Test::Nginx::Chat::HTTP::send_data($sock, $bytes, $deadline);
    my $r = Test::Nginx::Chat::HTTP::read_responses($sock, $deadline,
                                                    ['GET']);
    close $sock;
    return $r->{responses}[0];
}

1;
