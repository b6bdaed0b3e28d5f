package Test::Nginx::Chat::Socket;

# Data-driven nginx test scaffold (Test::Base subclass) that understands the
# test block format of the CPAN Test::Nginx::Socket module: see the POD at
# the end of this file for the supported functions, sections and
# environment variables.

use strict;
use warnings;

# Plain subclassing: no Spiffy source filter for this file. Test::Base's
# import (inherited) handles 'no_plan' / tests => N and exports @EXPORT of
# this class and of Test::Base.
use Test::Base ();
our @ISA = ('Test::Base');

use Cwd qw(cwd);
use File::Spec;
use List::Util qw(shuffle max min);
use Time::HiRes qw(time sleep);

use Test::Nginx::Chat::HTTP qw(connect_tcp send_data read_responses build_request);
use Test::Nginx::Chat::Process qw(expand_block free_port valgrind_enabled);

our $VERSION = '0.01';

our @EXPORT = qw(
    run_tests repeat_each no_shuffle workers master_on master_off log_level
    add_block_preprocessor no_long_string no_root_location env_to_nginx
    server_port html_dir server_root worker_connections check_accum_error_log
    bail_out
);

# ---------------------------------------------------------------------------
# Settings (package variables, as in Test::Nginx)

our $ServerPort = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServRoot = $ENV{TEST_NGINX_SERVROOT} || File::Spec->catdir(cwd(), 't', 'servroot');
if ($ENV{TEST_NGINX_RANDOMIZE}) {
    # Parallel runs (prove -jN): random port and server root per file.
    $ServerPort = free_port();
    $ServRoot = File::Spec->catdir(cwd(), 't', "servroot_$ServerPort");
}
our $ServerPortForClient =
    $ENV{TEST_NGINX_CLIENT_PORT} || $ENV{TEST_NGINX_PORT} || $ServerPort;

# Visible to "eval" sections and to code in test files.
$ENV{TEST_NGINX_SERVER_PORT} = $ServerPort;
$ENV{TEST_NGINX_SERVROOT} = $ServRoot;
$ENV{TEST_NGINX_HTML_DIR} = "$ServRoot/html";
our $ServerAddr = '127.0.0.1';
our $LogLevel = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $Workers = 1;
our $MasterProcessEnabled = ($ENV{TEST_NGINX_MASTER_PROCESS} // 'off') eq 'on' ? 1 : 0;
our $RepeatEach = 1;
our $NoShuffle = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $NoLongString = 0;
our $NoRootLocation = 0;
our $WorkerConnections = 1024;
our $CheckAccumErrLog = 0;
our $Timeout = 3;    # default client timeout per block, seconds
our @EnvToNginx;

my @BlockPreprocessors;
my $Main;            # Test::Nginx::Chat::Process of the main nginx instance
my $LastConfig;      # "--- config" of the previous block (reused when absent)
my $Started = 0;     # has the main instance been started in this file?

sub repeat_each            { $RepeatEach = shift if @_; return $RepeatEach }
sub no_shuffle             { $NoShuffle = 1 }
sub workers                { $Workers = shift if @_; return $Workers }
sub master_on              { $MasterProcessEnabled = 1 }
sub master_off             { $MasterProcessEnabled = 0 }
sub log_level              { $LogLevel = shift if @_; return $LogLevel }
sub worker_connections     { $WorkerConnections = shift if @_; return $WorkerConnections }
sub no_long_string         { $NoLongString = 1 }
sub no_root_location       { $NoRootLocation = 1 }
sub check_accum_error_log  { $CheckAccumErrLog = 1 }
sub env_to_nginx           { push @EnvToNginx, @_ }
sub add_block_preprocessor { push @BlockPreprocessors, @_ }
sub server_port            { $ServerPortForClient }
sub server_root            { $ServRoot }
sub html_dir               { "$ServRoot/html" }

# The main instance (undef before the first block ran).
sub main_instance { $Main }

sub bail_out {
    my ($msg) = @_;
    Test::Nginx::Chat::Process::stop_all();
    Test::More::BAIL_OUT($msg);
}

# ---------------------------------------------------------------------------
# Small helpers

# Section value in scalar context (undef when the section is absent).
sub _sec {
    my ($block, $name) = @_;
    my $v = $block->$name;
    return $v;
}

# Section value with surrounding white space removed (for one-word values).
sub _word {
    my $v = _sec(@_);
    return undef unless defined $v;
    $v =~ s/^\s+|\s+$//g;
    return $v;
}

# Element $i of an array ref, or the value itself.
sub _pick {
    my ($v, $i) = @_;
    return ref $v eq 'ARRAY' ? $v->[$i] : $v;
}

# Expected value of section $name for response $i. When a block gets
# several responses every such section must be an array with one element
# per response, as Test::Nginx::Socket requires: one value for all of them
# is an error there, so it is one here too.
sub _expect {
    my ($block, $name, $i, $many) = @_;
    my $v = _sec($block, $name);
    return $v->[$i] if ref $v eq 'ARRAY';
    die "--- $name: one value for several requests, expected an array\n"
        if $many && defined $v;
    return $v;
}

sub _timeout_secs {
    my ($block) = @_;
    my $t = _word($block, 'timeout');
    my $secs = $Timeout;
    if (defined $t && $t =~ /^([\d.]+)\s*(ms|s)?$/) {
        $secs = ($2 // 's') eq 'ms' ? $1 / 1000 : $1;
    }
    $secs *= 5 if valgrind_enabled();
    return $secs;
}

# ---------------------------------------------------------------------------
# Main loop

sub run_tests {
    Test::More::plan('no_plan') unless Test::Builder->new->has_plan;

    $ENV{TEST_NGINX_SERVER_PORT} = $ServerPort;
    $ENV{TEST_NGINX_CLIENT_PORT} //= $ServerPortForClient;
    $ENV{TEST_NGINX_SERVROOT} = $ServRoot;
    $ENV{TEST_NGINX_HTML_DIR} = html_dir();

    my @blocks = Test::Base::blocks();
    @blocks = shuffle @blocks unless $NoShuffle;

    for my $block (@blocks) {
        my $ok = eval {
            $_->($block) for @BlockPreprocessors;
            _run_block($block);
            1;
        };
        unless ($ok) {
            # Typically nginx failing to start; the message has the log tail.
            my $err = $@ || 'unknown error';
            my ($first) = split /\n/, $err;
            Test::More::fail($block->name . " - $first");
            Test::More::diag($err);
        }
    }

    unless ($ENV{TEST_NGINX_NO_CLEAN}) {
        $Main->stop if $Main;
        Test::Nginx::Chat::Process::report_valgrind_issues();
    }
}

sub _run_block {
    my ($block) = @_;
    my $name = $block->name;

    expand_block($block, 'server');
    if (defined _sec($block, 'must_die')) {
        expand_block($block, 'rest');
        return _run_must_die($block);
    }

    my $restarted = _ensure_server($block);
    my $block_log_start = $restarted ? 0 : $Main->error_log_size;

    # Compiled here, under strict, as Test::Nginx::Socket compiles it in
    # its own package: code of the test file is reached as main::name.
    if (defined(my $code = _sec($block, 'init'))) {
        my $ok = eval "#line 1 \"init section\"\n$code\n;1";
        unless ($ok) {
            Test::More::fail("$name - init section failed");
            Test::More::diag($@);
        }
    }
    expand_block($block, 'rest');

    for my $rep (0 .. $RepeatEach - 1) {
        my $log_from = ($CheckAccumErrLog || $rep == 0)
            ? $block_log_start : $Main->error_log_size;
        my @results = _send_requests($block);
        _check_responses($block, \@results, $rep);
        if (my $wait = _word($block, 'wait')) {
            sleep $wait;
        }
        _check_error_log($block, $log_from, $rep);
    }
}

# Apply the block's settings to the main instance; returns the nginx.conf
# text they give.
sub _configure_main {
    my ($block) = @_;
    my $config = _sec($block, 'config');
    if (defined $config) {
        $LastConfig = $config;
    } else {
        $config = $LastConfig // '';
    }
    $Main //= Test::Nginx::Chat::Process->new(port => $ServerPort, servroot => $ServRoot);
    $Main->configure(
        workers            => $Workers,
        master             => $MasterProcessEnabled,
        log_level          => _word($block, 'log_level') // $LogLevel,
        worker_connections => $WorkerConnections,
        env                => [@EnvToNginx],
        no_root_location   => $NoRootLocation,
        server_name        => _word($block, 'server_name') // 'localhost',
        main_config        => _sec($block, 'main_config') // '',
        post_main_config   => _sec($block, 'post_main_config') // '',
        http_config        => _sec($block, 'http_config') // '',
        server_config      => _sec($block, 'server_config') // '',
        config             => $config,
    );
    return $Main->conf_text;
}

# (Re)start the main nginx unless it runs with the same nginx.conf already.
# Returns true when nginx was (re)started.
sub _ensure_server {
    my ($block) = @_;
    my $conf = _configure_main($block);
    my $reuse = $Started && $Main->is_running
        && ($Main->{running_conf} // '') eq $conf
        && !$ENV{TEST_NGINX_FORCE_RESTART_ON_TEST};
    if ($reuse) {
        $Main->write_user_files(_sec($block, 'user_files'));
        return 0;
    }
    $Main->stop;
    $Main->setup;
    $Main->write_user_files(_sec($block, 'user_files'));
    $Started = 1;
    $Main->launch;    # dies with the error.log tail on failure
    return 1;
}

# "--- must_die": nginx is expected to exit right after starting (once per
# repeat_each iteration); only the error log sections are checked.
sub _run_must_die {
    my ($block) = @_;
    my $name = $block->name;
    my $want = _word($block, 'must_die');
    _configure_main($block);
    for my $rep (0 .. $RepeatEach - 1) {
        $Main->stop;
        $Main->setup;
        $Main->write_user_files(_sec($block, 'user_files'));
        $Started = 1;
        my $status = $Main->launch(expect_death => 1);
        if (!defined $status) {
            Test::More::fail("$name - nginx should have died but is still running");
        } elsif (defined $want && length $want && $want ne ($status >> 8)) {
            Test::More::fail("$name - nginx exit code " . ($status >> 8) . ", expected $want");
        }
        $Main->stop;
        _check_error_log($block, 0, $rep);
    }
}

# ---------------------------------------------------------------------------
# Requests

# A string, or an array of strings and { value => ..., delay_before => secs },
# as a list of [bytes, delay] packets.
sub _packets {
    my ($spec) = @_;
    return map { ref $_ eq 'HASH' ? [$_->{value} // '', $_->{delay_before}] : [$_ // '', undef] }
        (ref $spec eq 'ARRAY' ? @$spec : ($spec));
}

# Turn one request spec (a "METHOD URI [PROTO]\nbody" string, or an array
# of packets: strings or { value => ..., delay_before => secs }) into
# ([ [bytes, delay], ... ], $method).
sub _build_request {
    my ($block, $spec, $idx, $conn_header) = @_;
    my @pk = _packets($spec);
    my $full = join '', map { $_->[0] } @pk;

    # Skip leading blank and "#" comment lines, and indentation.
    $full =~ /\A(?:[ \t]*(?:#[^\n]*)?\n)*[ \t]*/;
    my $line_start = $+[0];
    my $eol = index($full, "\n", $line_start);
    my $line = $eol < 0 ? substr($full, $line_start)
        : substr($full, $line_start, $eol - $line_start);
    my $body_start = $eol < 0 ? length $full : $eol + 1;
    $line =~ s/\s+$//;
    my ($method, $uri, $proto) = split ' ', $line, 3;
    $method //= 'GET';
    $uri = '/' unless defined $uri && length $uri;
    $proto //= 'HTTP/1.1';

    # The body is the rest, without its last newline.
    my $body_end = length $full;
    $body_end-- if $body_end > $body_start && substr($full, -1) eq "\n";
    my $body = substr($full, $body_start, $body_end - $body_start);

    my $more = _pick(_sec($block, 'more_headers'), $idx);
    my @extra;
    for my $h (split /\n/, $more // '') {
        next if $h !~ /\S/ || $h =~ /^\s*#/;
        push @extra, [$1, $2] if $h =~ /^\s*([^:\s]+)\s*:\s*(.*?)\s*$/;
    }
    my %has = map { lc($_->[0]) => 1 } @extra;
    my @headers;
    push @headers, ['Host', 'localhost'] unless $has{host};
    push @headers, ['Connection', $conn_header // 'close'] unless $has{connection};
    push @headers, @extra;
    if (!$has{'content-length'} && !$has{'transfer-encoding'}
        && (length $body || $method =~ /^(?:POST|PUT|PATCH)$/))
    {
        push @headers, ['Content-Length', length $body];
    }
    my $head = build_request($method, $uri, $proto, \@headers, '');

    # Keep the caller's packet boundaries for the body bytes.
    my (@out, $off);
    $off = 0;
    for my $i (0 .. $#pk) {
        my ($data, $delay) = @{ $pk[$i] };
        my ($s, $e) = ($off, $off + length $data);
        $off = $e;
        my ($bs, $be) = (max($s, $body_start), min($e, $body_end));
        my $slice = $be > $bs ? substr($full, $bs, $be - $bs) : '';
        push @out, $i == 0 ? [$head . $slice, undef] : [$slice, $delay];
    }
    return (\@out, uc $method);
}

# The connections to make for a block: [ { packets => [...], methods => [...] } ]
sub _connections {
    my ($block) = @_;
    if (defined(my $p = _sec($block, 'pipelined_requests'))) {
        my @reqs = ref $p eq 'ARRAY' ? @$p : ($p);
        my ($bytes, @methods) = ('');
        for my $i (0 .. $#reqs) {
            my ($pk, $m) = _build_request($block, $reqs[$i], $i,
                $i == $#reqs ? 'close' : 'keep-alive');
            $bytes .= join '', map { $_->[0] } @$pk;
            push @methods, $m;
        }
        return ({ packets => [[$bytes, undef]], methods => \@methods });
    }
    if (defined(my $raw = _sec($block, 'raw_request'))) {
        my @pk = _packets($raw);
        my ($m) = ($pk[0][0] // '') =~ /^\s*(\S+)/;
        return ({ packets => \@pk, methods => [uc($m // 'GET')] });
    }
    my $req = _sec($block, 'request');
    return () unless defined $req;
    my @reqs = ref $req eq 'ARRAY' ? @$req : ($req);
    my @conns;
    for my $i (0 .. $#reqs) {
        my ($pk, $m) = _build_request($block, $reqs[$i], $i, undef);
        push @conns, { packets => $pk, methods => [$m] };
    }
    return @conns;
}

# Send the block's request(s); returns one entry per request:
# { res => parsed response or undef, conn => connection result, first => BOOL }
sub _send_requests {
    my ($block) = @_;
    my $timeout = _timeout_secs($block);
    my $middle = _word($block, 'raw_request_middle_delay') // $ENV{TEST_NGINX_SLEEP} // 0.015;
    my @results;
    for my $c (_connections($block)) {
        my $r = _run_connection($c, $timeout, $middle);
        for my $k (0 .. $#{ $c->{methods} }) {
            push @results, { res => $r->{responses}[$k], conn => $r, first => $k == 0 };
        }
    }
    return @results;
}

sub _run_connection {
    my ($c, $timeout, $middle) = @_;
    my $deadline = time + $timeout;
    my ($sock, $err) = connect_tcp($ServerAddr, $ServerPortForClient, $deadline);
    return { responses => [], error => $err, timed_out => 0 } unless $sock;
    my $send_err;
    my @packets = @{ $c->{packets} };
    for my $i (0 .. $#packets) {
        my ($data, $delay) = @{ $packets[$i] };
        if ($i > 0) {
            $delay //= $middle;
            if ($delay > 0) {
                sleep $delay;
                $deadline += $delay;    # delays do not count as waiting time
            }
        }
        next unless length $data;
        $send_err = send_data($sock, $data, $deadline) and last;
    }
    my $r = read_responses($sock, $deadline, $c->{methods});
    close $sock;
    if ($send_err) {
        $r->{timed_out} = 1 if $send_err eq 'timeout';
        # nginx may answer and close before reading everything (e.g. 413).
        $r->{error} //= "send: $send_err" unless @{ $r->{responses} };
    }
    return $r;
}

# ---------------------------------------------------------------------------
# Checks

sub _is_body {
    my ($got, $expected, $test) = @_;
    if (ref $expected eq 'Regexp') {
        return Test::More::like($got, $expected, $test);
    }
    if ($NoLongString) {
        return Test::Base::is($got, $expected, $test);
    }
    require Test::LongString;
    return Test::LongString::is_string($got, $expected, $test);
}

sub _check_responses {
    my ($block, $results, $rep) = @_;
    my $name = $block->name;
    my $abort = defined _sec($block, 'abort');
    my $rsfx = $RepeatEach > 1 ? " (repeat $rep)" : '';
    my $many = @$results > 1 || defined _sec($block, 'pipelined_requests');

    for my $i (0 .. $#$results) {
        my $r = $results->[$i];
        my $conn = $r->{conn};
        if ($r->{first}) {
            Test::More::diag("$name - $conn->{error}") if $conn->{error};
            if ($conn->{timed_out} && !$abort) {
                Test::More::fail("ERROR: client socket timed out - $name$rsfx");
            }
        }
        next if defined _sec($block, 'ignore_response');

        my $res = $r->{res} // { headers => {}, body => '', raw_headers => '' };
        my $sfx = (@$results > 1 ? " (req $i)" : '') . $rsfx;
        my $status = $res->{status} // '';

        if (defined(my $like = _expect($block, 'error_code_like', $i, $many))) {
            $like =~ s/^\s+|\s+$//g;
            Test::More::like($status, qr/$like/, "$name - status code ok$sfx");
        } else {
            my $code = _expect($block, 'error_code', $i, $many) // 200;
            $code =~ s/^\s+|\s+$//g;
            Test::More::is($status, $code, "$name - status code ok$sfx");
        }

        _check_headers($block, $res, $i, $sfx, $many);

        my $body = $res->{body} // '';
        if (defined(my $exp = _expect($block, 'response_body', $i, $many))) {
            _is_body($body, $exp, "$name - response_body - response is expected$sfx");
        }
        if (defined(my $pat = _expect($block, 'response_body_like', $i, $many))) {
            my $re = ref $pat eq 'Regexp' ? $pat : qr/$pat/s;
            Test::More::like($body, $re, "$name - response_body_like - response is expected$sfx");
        }
        if (defined(my $pat = _expect($block, 'response_body_unlike', $i, $many))) {
            my $re = ref $pat eq 'Regexp' ? $pat : qr/$pat/s;
            Test::More::unlike($body, $re,
                "$name - response_body_unlike - response is expected$sfx");
        }
    }
}

# Lines of a response_headers(_like) section: "Name: value", "!Name".
sub _header_lines {
    my ($spec) = @_;
    return () unless defined $spec;
    return grep { /\S/ && !/^\s*#/ } split /\n/, $spec;
}

sub _check_headers {
    my ($block, $res, $i, $sfx, $many) = @_;
    my $name = $block->name;
    my $h = $res->{headers} || {};

    for my $line (_header_lines(_expect($block, 'response_headers', $i, $many))) {
        if ($line =~ /^\s*!\s*([^:\s]+)\s*:?\s*$/) {
            my $k = $1;
            Test::More::ok(!defined $h->{ lc $k }, "$name - header $k not present$sfx")
                or Test::More::diag("$k: $h->{lc $k}");
        } elsif ($line =~ /^\s*([^:\s]+)\s*:\s*(.*?)\s*$/) {
            Test::More::is($h->{ lc $1 } // '', $2, "$name - header $1 ok$sfx");
        } else {
            Test::More::fail("$name - bad response_headers line: $line");
        }
    }
    for my $line (_header_lines(_expect($block, 'response_headers_like', $i, $many))) {
        if ($line =~ /^\s*([^:\s]+)\s*:\s*(.*?)\s*$/) {
            my ($k, $pat) = ($1, $2);
            Test::More::like($h->{ lc $k } // '', qr/^$pat$/, "$name - header $k like ok$sfx");
        } else {
            Test::More::fail("$name - bad response_headers_like line: $line");
        }
    }
    my $raw = $res->{raw_headers} // '';
    if (defined(my $pat = _expect($block, 'raw_response_headers_like', $i, $many))) {
        my $re = ref $pat eq 'Regexp' ? $pat : qr/$pat/s;
        Test::More::like($raw, $re, "$name - raw resp headers like$sfx");
    }
    if (defined(my $pat = _expect($block, 'raw_response_headers_unlike', $i, $many))) {
        my $re = ref $pat eq 'Regexp' ? $pat : qr/$pat/s;
        Test::More::unlike($raw, $re, "$name - raw resp headers unlike$sfx");
    }
}

# Patterns of an error_log-like section: a string (one pattern per line),
# a qr// object or an array of strings and qr// objects.
sub _patterns {
    my ($v) = @_;
    return () unless defined $v;
    return ($v) if ref $v eq 'Regexp';
    return grep { defined && length } @$v if ref $v eq 'ARRAY';
    return grep { length } split /\n+/, $v;
}

sub _match_lines {
    my ($pat, $lines) = @_;
    return grep { ref $pat ? $_ =~ $pat : index($_, $pat) >= 0 } @$lines;
}

sub _check_error_log {
    my ($block, $from, $rep) = @_;
    my $name = $block->name;
    my $sfx = $RepeatEach > 1 ? " (repeat $rep)" : '';
    my @want = _patterns(_sec($block, 'error_log'));
    my @unwanted = _patterns(_sec($block, 'no_error_log'));
    my $grep = _sec($block, 'grep_error_log');

    my $read = sub { [split /\n/, $Main->read_error_log($from)] };
    my $lines = $read->();

    # nginx may still be writing the last lines: wait a little for
    # expected patterns before declaring them missing.
    my $deadline = time + (valgrind_enabled() ? 5 : 1);
    while (grep { !_match_lines($_, $lines) } @want) {
        last if time > $deadline;
        sleep 0.05;
        $lines = $read->();
    }

    for my $pat (@want) {
        Test::More::ok(scalar(_match_lines($pat, $lines)),
            "$name - pattern \"$pat\" matches a line in error.log$sfx");
    }
    for my $pat (@unwanted) {
        my @hits = _match_lines($pat, $lines);
        Test::More::ok(!@hits,
            "$name - pattern \"$pat\" should not match any line in error.log$sfx")
            or Test::More::diag("matching line(s):\n" . join "\n", @hits[0 .. min(4, $#hits)]);
    }
    if (defined $grep) {
        my $out = '';
        for my $l (@$lines) {
            if (ref $grep eq 'Regexp') {
                $out .= "$&\n" while $l =~ /$grep/g;
            } else {
                my $p = 0;
                while ((my $at = index($l, $grep, $p)) >= 0) {
                    $out .= "$grep\n";
                    $p = $at + length $grep;
                }
            }
        }
        my $exp = _sec($block, 'grep_error_log_out');
        $exp = ref $exp eq 'ARRAY' ? $exp->[$rep] : $exp;
        _is_body($out, $exp // '', "$name - grep_error_log_out$sfx");
    }

    # Warn (without failing) about alarming lines nobody asked about.
    for my $l (grep { /\[(?:alert|crit|emerg)\]/ } @$lines) {
        next if grep { _match_lines($_, [$l]) } @want, @unwanted;
        Test::More::diag("WARNING: $name - unexpected line in error.log: $l");
    }
}

END {
    local $?;
    unless ($ENV{TEST_NGINX_NO_CLEAN}) {
        Test::Nginx::Chat::Process::stop_all();
        Test::Nginx::Chat::Process::report_valgrind_issues();
    }
}

1;

__END__

=head1 NAME

Test::Nginx::Chat::Socket - data-driven nginx test scaffold

=head1 SYNOPSIS

    use Test::Nginx::Chat::Socket 'no_plan';

    workers(2);
    master_on();
    no_shuffle();
    add_block_preprocessor(sub {
        my $block = shift;
        $block->set_value(http_config => "...") unless defined $block->http_config;
    });

    run_tests();

    __DATA__

    === TEST 1: hello
    --- config
    location /t { return 200 "hi\n"; }
    --- request
    GET /t
    --- error_code: 200
    --- response_body
    hi
    --- no_error_log
    [error]

Run with C<prove -I t/lib t/some-test.t>.

=head1 DESCRIPTION

A small independent implementation of the test block format documented for
the CPAN module Test::Nginx::Socket. The suite's files load it through
L<Test::Nginx::Chat::Blocks>, which loads the CPAN module instead when
asked; what a file may use is what both accept (see F<t/README>). It is
a L<Test::Base> subclass: C<--- ONLY>, C<--- SKIP>, C<--- LAST> and all
Test::Base filters (C<eval>, C<chomp>, ...) work as usual. The default
filters C<norm> and C<trim> apply to every section.

For each block an F<nginx.conf> is generated under the server root; nginx
(always C<daemon off>, as a child process) is restarted only when the
generated configuration differs from the running one. The first block of a
file always starts a fresh server, and the server is stopped after
C<run_tests()> (or at exit). The server root (F<conf>, F<logs>, F<html> and
temp directories) is recreated at every start.

Blocks are run in random order unless C<no_shuffle()> is called or
C<TEST_NGINX_NO_SHUFFLE=1> is set, as with the CPAN module.

=head1 EXPORTED FUNCTIONS

C<run_tests>, C<repeat_each([$n])>, C<no_shuffle>, C<workers($n)>,
C<master_on>, C<master_off>, C<log_level($level)>,
C<worker_connections($n)> (default 1024), C<add_block_preprocessor($code)>,
C<no_long_string>, C<no_root_location>, C<env_to_nginx(@names)>,
C<check_accum_error_log>, C<server_port>, C<html_dir>, C<server_root>,
C<bail_out($msg)>, plus everything L<Test::Base> exports (C<plan>, C<is>,
C<ok>, C<like>, C<diag>, C<blocks>, ...).

C<Test::Nginx::Chat::Socket::main_instance()> returns the
L<Test::Nginx::Chat::Process> object of the running main server (for
example to read its pid or error log from C<--- init> code).

Package variables: C<$ServerPort>, C<$ServerPortForClient>, C<$ServRoot>,
C<$LogLevel>, C<$Workers>, C<$MasterProcessEnabled>, C<$RepeatEach>,
C<$NoShuffle>, C<$Timeout>.

=head1 SECTIONS

=over

=item main_config, post_main_config, http_config, server_config, config

Configuration snippets placed at the top level (before and after
C<http {}>), in C<http {}>, and in the default C<server {}> (C<server_config>
before C<config>). A block without C<config> reuses the previous block's.

=item server_name, log_level

Per-block C<server_name> (default C<localhost>) and error log level.

=item user_files

C<<< >>> name [mtime] >>> lines followed by the file content, creating files
under F<html/>; with C<eval>, an array of C<[name, content, mtime]>.

=item init

Perl code run once per block after nginx is up and before the requests;
a C<die> fails the block. As in the CPAN module it is compiled in the
harness's package under C<strict>: names of the test file are written
C<main::name>.

=item request

C<METHOD URI [PROTO]> on the first line (leading blank/C<#> lines and
indentation ignored; PROTO defaults to C<HTTP/1.1>), the following lines are
the body (last newline removed). C<Host: localhost>, C<Connection: close>
and C<Content-Length> are added unless given in C<more_headers>. With
C<eval>, an array gives several requests sent one after another on new
connections; an element that is itself an array gives the packets of one
request (strings or C<< { value => ..., delay_before => secs } >>).

=item pipelined_requests, raw_request, more_headers, raw_request_middle_delay

C<pipelined_requests> (array) are sent at once on one keep-alive connection.
C<raw_request> is sent as is (an array gives packets, sent with
C<raw_request_middle_delay> / C<TEST_NGINX_SLEEP> / 0.015 s between them).
C<more_headers> has one C<Name: value> per line (an array: one per request).

=item error_code, error_code_like

Expected status (default 200) or a regex for it.

=item response_body, response_body_like, response_body_unlike

Exact body (a C<qr//> value is matched instead), or a pattern used as
C<qr/$pattern/s>.

=item response_headers, response_headers_like

C<Name: value> (exact; an empty value also matches an absent header) and
C<!Name> (must be absent); C<_like> values are anchored regexes
(C<qr/^$pattern$/>).

=item raw_response_headers_like, raw_response_headers_unlike

Regex (C</s>) against the status line and header block, CRLFs included.

=item timeout, abort, ignore_response, wait

Client timeout for each connection (whole exchange; default 3 s; C<ms>
suffix allowed). A timeout fails the block unless C<--- abort> is given;
what was received is still checked. C<ignore_response> skips all response
checks. C<wait> sleeps before the error log checks.

=item error_log, no_error_log, grep_error_log, grep_error_log_out

One substring per line, or with C<eval> a C<qr//> or an array of strings
and C<qr//> objects, matched against the lines logged during this request
(or the whole block with C<check_accum_error_log()>). Unexpected
C<[alert]>, C<[crit]> and C<[emerg]> lines are reported as diagnostics.

=item must_die

nginx must exit right after start (optionally with the given exit code);
only the error log sections are checked then.

=back

Sections given as arrays (with C<eval>) are checked per request. When a
block sends several requests (an array C<request>, C<pipelined_requests>)
the status, header and body sections must be arrays, one element per
request, as the CPAN module requires.
Every C<$TEST_NGINX_FOO> / C<${TEST_NGINX_FOO}> in any section is replaced
with the environment variable's value (a missing one fails the block);
C<TEST_NGINX_RAND_PORT_N> get a free port on first use. The sections that
build the server are expanded before nginx starts, the others after
C<--- init> ran (so init code may set variables for the requests);
C<--- init> itself is not expanded.

=head1 ENVIRONMENT

C<TEST_NGINX_BINARY> (default C<nginx> in C<PATH>, then
F</usr/sbin/nginx>), C<TEST_NGINX_SERVER_PORT> / C<TEST_NGINX_PORT> (1984),
C<TEST_NGINX_CLIENT_PORT>, C<TEST_NGINX_SERVROOT> (F<t/servroot>),
C<TEST_NGINX_LOAD_MODULES> (space separated paths, C<load_module> lines),
C<TEST_NGINX_LOG_LEVEL> (debug), C<TEST_NGINX_MASTER_PROCESS> (on/off),
C<TEST_NGINX_NO_SHUFFLE>, C<TEST_NGINX_NO_CLEAN> (leave nginx running),
C<TEST_NGINX_FORCE_RESTART_ON_TEST> (restart for every block),
C<TEST_NGINX_RANDOMIZE> (random port and server root), C<TEST_NGINX_SLEEP>,
C<TEST_NGINX_EVENT_TYPE>, C<TEST_NGINX_WORKER_USER>,
C<TEST_NGINX_START_TIMEOUT> (seconds to wait for the port, default 5).

C<TEST_NGINX_USE_VALGRIND=1> (or a string of valgrind options) runs nginx
under C<valgrind --tool=memcheck --leak-check=full> with one process
(master off), longer timeouts and logs in
F<servroot/logs/valgrind.PID.log>; F<t/valgrind.suppress> (or
F<./valgrind.suppress>) is used when present. Each time nginx stops the logs
are scanned; definitely lost blocks, invalid reads/writes/frees and uses of
uninitialised values whose record mentions a frame matching
C<TEST_NGINX_VALGRIND_FRAME> (default C<ngx_http_chat>; empty = any) are
reported as one failing test after the file's blocks.

=cut
