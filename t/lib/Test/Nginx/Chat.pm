package Test::Nginx::Chat;

# Programmatic helpers for scenario tests that do not fit the data-driven
# block format: plain HTTP requests, Server-Sent Events streams and extra
# nginx instances. See the POD at the end of this file.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(cwd);
use File::Spec;
use IO::Select;
use Time::HiRes qw(time sleep);

use Test::Nginx::Chat::HTTP qw(connect_tcp send_data read_responses build_request
    parse_http_response decode_chunked header_pairs);
use Test::Nginx::Chat::Process qw(expand_env free_port);
use Test::Nginx::Chat::Blocks ();

use Exporter 'import';
our @EXPORT = qw(http_request sse_open start_nginx_with stop_nginx);
our @EXPORT_OK = (@EXPORT, qw(main_port free_port parse_http_response decode_chunked));
our %EXPORT_TAGS = (all => \@EXPORT_OK);

my @Started;    # instances created by start_nginx_with and not yet stopped
my $Seq = 0;    # number of instances started so far (default servroot names)

# Port of the main instance managed by the block harness.
sub main_port {
    return Test::Nginx::Chat::Blocks::setting('ServerPortForClient')
        || $ENV{TEST_NGINX_CLIENT_PORT}
        || $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
}

# "/path" (main instance or $port) or "http://host:port/path".
sub _target {
    my ($target, $port) = @_;
    $target //= '/';
    if ($target =~ m{^http://([^/:]+)(?::(\d+))?(/.*)?$}) {
        return ($1, $2 // 80, $3 // '/');
    }
    return ('127.0.0.1', $port || main_port(), $target);
}


sub http_request {
    my ($method, $target, $headers, $body, $timeout) = @_;
    $method = uc($method // 'GET');
    $timeout //= 5;
    my ($host, $port, $path) = _target($target);

    my @pairs = header_pairs($headers);
    my %has = map { lc $_->[0] => 1 } @pairs;
    unshift @pairs, ['Connection', 'close'] unless $has{connection};
    unshift @pairs, ['Host', 'localhost'] unless $has{host};
    if (!$has{'content-length'} && !$has{'transfer-encoding'}
        && (defined $body || $method =~ /^(?:POST|PUT|PATCH)$/))
    {
        push @pairs, ['Content-Length', length($body // '')];
    }

    my $t0 = time;
    my $deadline = $t0 + $timeout;
    my %res = (status => undef, headers => {}, body => '', header_list => [],
        raw_headers => '', complete => 0, timed_out => 0, error => undef);

    my ($sock, $err) = connect_tcp($host, $port, $deadline);
    unless ($sock) {
        return { %res, error => $err, elapsed => time - $t0 };
    }
    my $send_err = send_data($sock,
        build_request($method, $path, 'HTTP/1.1', \@pairs, $body), $deadline);
    my $r = read_responses($sock, $deadline, [$method]);
    close $sock;
    my $elapsed = time - $t0;

    if (my $resp = $r->{responses}[0]) {
        $res{$_} = $resp->{$_} for qw(status headers body header_list raw_headers complete);
    }
    $res{timed_out} = $r->{timed_out} || (($send_err // '') eq 'timeout') ? 1 : 0;
    $res{error} = $res{timed_out} ? "timed out after ${timeout}s"
        : $r->{error} // (defined $res{status} ? undef : $send_err // 'no response');
    $res{elapsed} = $elapsed;
    return \%res;
}

sub sse_open {
    my ($target, $headers, $port, $timeout) = @_;
    $timeout //= 5;
    my ($host, $p, $path) = _target($target, $port);

    my @pairs = header_pairs($headers);
    my %has = map { lc $_->[0] => 1 } @pairs;
    unshift @pairs, ['Accept', 'text/event-stream'] unless $has{accept};
    unshift @pairs, ['Host', 'localhost'] unless $has{host};

    my $deadline = time + $timeout;
    my ($sock, $err) = connect_tcp($host, $p, $deadline);
    croak "sse_open($target): $err" unless $sock;
    my $send_err = send_data($sock, build_request('GET', $path, 'HTTP/1.1', \@pairs), $deadline);
    croak "sse_open($target): $send_err" if $send_err;

    # Read up to the end of the response header block.
    my ($buf, $res) = ('');
    my $sel = IO::Select->new($sock);
    until ($res = parse_http_response($buf)) {
        my $left = $deadline - time;
        croak "sse_open($target): timed out waiting for response headers"
            if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($sock, $buf, 65536, length $buf);
        next if !defined $n && ($!{EAGAIN} || $!{EINTR});
        croak "sse_open($target): connection closed before response headers"
            unless $n;
    }
    croak "sse_open($target): $res->{error}" if $res->{error};
    return Test::Nginx::Chat::SSE->_new($sock, $res, substr($buf, $res->{body_offset}));
}

sub start_nginx_with {
    my (%o) = @_;
    my $port = $o{port} || free_port();
    # Default server root: <main servroot>_<n>, n counting the instances
    # started by this test file, so reruns reuse the same directories.
    my $root = $o{servroot} // do {
        my $main = Test::Nginx::Chat::Blocks::setting('ServRoot')
            // File::Spec->catdir(cwd(), 't', 'servroot');
        $Seq++;
        "${main}_$Seq";
    };
    my %conf = map { $_ => expand_env($o{$_} // '') }
        qw(main_config post_main_config http_config server_config config);
    my $inst = Test::Nginx::Chat::Process->new(
        port               => $port,
        servroot           => $root,
        workers            => $o{workers} // 1,
        master             => $o{master} // $o{master_on} // 0,
        log_level          => $o{log_level}
                              // Test::Nginx::Chat::Blocks::setting('LogLevel')
                              // 'debug',
        worker_connections => $o{worker_connections} // 1024,
        env                => $o{env} // [],
        no_root_location   => $o{no_root_location} // 0,
        server_name        => $o{server_name} // 'localhost',
        %conf,
    );
    $inst->start(user_files => $o{user_files});    # dies with the log tail
    push @Started, $inst;
    return $inst;
}

sub stop_nginx {
    my @which = @_ ? @_ : @Started;
    my $status;
    for my $inst (@which) {
        if (!ref $inst) {    # a port number
            my ($found) = grep { $_->port == $inst } @Started or next;
            $inst = $found;
        }
        $status = $inst->stop;
        @Started = grep { $_ != $inst } @Started;
    }
    Test::Nginx::Chat::Process::report_valgrind_issues();
    return $status;
}

# ---------------------------------------------------------------------------

package Test::Nginx::Chat::SSE;

use strict;
use warnings;

use IO::Select;
use Time::HiRes qw(time);

sub _new {
    my ($class, $sock, $res, $rest) = @_;
    my $h = $res->{headers};
    my $self = bless {
        sock    => $sock,
        status  => $res->{status},
        headers => $h,
        raw     => $rest,    # received body bytes not decoded yet
        text    => '',       # decoded body text not parsed yet
        eof     => 0,        # no more data will come
        pending => undef,    # event being assembled
    }, $class;
    if (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        $self->{mode} = 'chunked';
        $self->{chunk_left} = 0;
    } elsif (defined $h->{'content-length'} && $h->{'content-length'} =~ /^\s*(\d+)/) {
        @$self{qw(mode left)} = ('length', $1);
    } else {
        $self->{mode} = 'close';
    }
    $self->{eof} = 1 if $res->{status} == 204 || $res->{status} == 304;
    $self->_decode;
    return $self;
}

sub status  { $_[0]{status} }
sub headers { $_[0]{headers} }
sub eof     { $_[0]{eof} }

# the chunked body ended properly: the last chunk ("0\r\n\r\n") came
sub last_chunk { $_[0]{last_chunk} ? 1 : 0 }

# for Test::Nginx::Chat::Exchange::wait_any
sub sock     { $_[0]{sock} }
sub wants    { $_[0]{eof} || !$_[0]{sock} ? undef : 'r' }
sub deadline { undef }
sub step     { my ($self) = @_; 1 while !$self->{eof} && $self->_fill(0); 1 }

sub close {
    my ($self) = @_;
    CORE::close($self->{sock}) if $self->{sock};
    $self->{sock} = undef;
    $self->{eof} = 1;
}

sub DESTROY { $_[0]->close }

# Move bytes from {raw} to {text}, removing the transfer coding.
sub _decode {
    my ($self) = @_;
    if ($self->{mode} eq 'close') {
        $self->{text} .= $self->{raw};
        $self->{raw} = '';
    } elsif ($self->{mode} eq 'length') {
        my $n = length $self->{raw};
        $n = $self->{left} if $n > $self->{left};
        $self->{text} .= substr($self->{raw}, 0, $n, '');
        $self->{left} -= $n;
        $self->{eof} = 1 if $self->{left} == 0;
    } else {
        while (length $self->{raw}) {
            if ($self->{chunk_left} > 0) {
                my $n = length $self->{raw};
                $n = $self->{chunk_left} if $n > $self->{chunk_left};
                $self->{text} .= substr($self->{raw}, 0, $n, '');
                $self->{chunk_left} -= $n;
                $self->{need_crlf} = 1 if $self->{chunk_left} == 0;
            } elsif ($self->{need_crlf}) {
                last if length $self->{raw} < 2 && $self->{raw} ne "\n";
                $self->{raw} =~ s/\A\r?\n//;
                $self->{need_crlf} = 0;
            } elsif ($self->{trailer}) {
                # after the last chunk: trailer fields (ignored) up to an
                # empty line
                last unless $self->{raw} =~ s/\A([^\n]*)\n//;
                next unless $1 eq '' || $1 eq "\r";
                @$self{qw(last_chunk eof)} = (1, 1);
                $self->{raw} = '';
                last;
            } else {
                last unless $self->{raw} =~ s/\A([0-9a-fA-F]+)[^\n]*\n//;
                my $size = hex $1;
                if ($size == 0) {
                    $self->{trailer} = 1;
                    next;
                }
                $self->{chunk_left} = $size;
            }
        }
    }
}

# Wait up to $wait seconds for data; false when nothing arrived.
sub _fill {
    my ($self, $wait) = @_;
    my $sock = $self->{sock} or return 0;
    return 0 unless IO::Select->new($sock)->can_read($wait);
    my $n = sysread($sock, $self->{raw}, 65536, length $self->{raw});
    if (!defined $n) {
        return 0 if $!{EAGAIN} || $!{EINTR};
        $self->{eof} = 1;
        $self->{error} = "read: $!";
    } elsif ($n == 0) {
        $self->{eof} = 1;
    }
    $self->_decode;
    return 1;
}

# Parse complete lines of {text}; return the next event (or comment) or undef.
sub _next_item {
    my ($self, $comments) = @_;
    # A lone "\r" at the end may be the first half of "\r\n": wait for more,
    # unless the stream has ended.
    my $eol = $self->{eof} ? qr/\r\n|\n|\r/ : qr/\r\n|\n|\r(?!\z)/;
    while ($self->{text} =~ s/\A([^\r\n]*)(?:$eol)//) {
        my $line = $1;
        if ($line eq '') {
            my $ev = delete $self->{pending} or next;
            $ev->{data} = join "\n", @{ delete $ev->{_data} } if $ev->{_data};
            return $ev;
        }
        if ($line =~ /^:(.*)$/s) {
            next unless $comments;
            (my $c = $1) =~ s/^ //;
            return { comment => $c };
        }
        my ($field, $value) = $line =~ /^([^:]*)(?::(.*))?$/s;
        $value //= '';
        $value =~ s/^ //;
        if ($field eq 'data') {
            push @{ ($self->{pending} ||= {})->{_data} }, $value;
        } elsif ($field =~ /^(?:event|id|retry)$/) {
            ($self->{pending} ||= {})->{$field} = $value;
        }
    }
    return undef;
}

sub read_event {
    my ($self, $timeout, $opts) = @_;
    $timeout //= 5;
    my $comments = $opts && $opts->{comments};
    my $deadline = time + $timeout;
    while (1) {
        my $item = $self->_next_item($comments);
        return $item if $item;
        return undef if $self->{eof};
        my $left = $deadline - time;
        return undef if $left <= 0;
        $self->_fill($left);
    }
}

# Everything that can be had now without waiting: the complete events (and
# comments, with { comments => 1 }) in order, possibly none.
sub poll_events {
    my ($self, $opts) = @_;
    my $comments = $opts && $opts->{comments};
    my @items;
    $self->step;
    while (my $item = $self->_next_item($comments)) {
        push @items, $item;
    }
    return @items;
}

# Rest of the body as text (until end of message, close or timeout).
sub read_body {
    my ($self, $timeout) = @_;
    my $deadline = time + ($timeout // 5);
    until ($self->{eof}) {
        my $left = $deadline - time;
        last if $left <= 0;
        $self->_fill($left);
    }
    my $text = $self->{text};
    $self->{text} = '';
    return $text;
}

1;

__END__

=head1 NAME

Test::Nginx::Chat - programmatic helpers for nginx scenario tests

=head1 SYNOPSIS

    use Test::Nginx::Chat::Blocks 'no_plan';  # optional: blocks, main instance
    use Test::Nginx::Chat;                 # http_request sse_open
                                           # start_nginx_with stop_nginx

    my $node = start_nginx_with(
        port        => 1990,               # default: a free port
        servroot    => 't/servroot_b',     # default: t/servroot_1, _2, ...
        http_config => 'chat_zone 1m;',
        config      => 'location /sse { ... }',
    );

    my $res = http_request(POST => "/publish", { 'X-User' => 'a' },
                           "hello", 2);    # main instance (server_port())
    my $other = http_request(GET => $node->url('/stats'));
    is $res->{status}, 200;
    ok $res->{elapsed} < 1;

    my $sse = sse_open('/sse?room=1', {}, $node->port);
    is $sse->status, 200;
    my $ev = $sse->read_event(2);          # undef after 2 s without event
    is $ev->{data}, "hello";
    $sse->close;

    stop_nginx($node);                     # or stop_nginx() for all

    run_tests();                           # blocks, against the main instance

=head1 FUNCTIONS

Exported by default: C<http_request>, C<sse_open>, C<start_nginx_with>,
C<stop_nginx>. On request: C<main_port>, C<free_port>,
C<parse_http_response>, C<decode_chunked> (C<:all> for everything).

=over

=item http_request($method, $path_or_url, \%headers, $body, $timeout)

Sends one HTTP/1.1 request over a new connection and reads the whole
response. C<$path_or_url> is a path on the main instance
(127.0.0.1:C<server_port()>) or C<http://host:port/path>. C<Host: localhost>,
C<Connection: close> and C<Content-Length> (when C<$body> is defined or the
method is POST/PUT/PATCH) are added unless given; headers may also be a flat
array ref to keep order or repeat names. C<$timeout> (default 5 s) covers the
whole exchange. Returns a hash ref: C<status> (undef when no response),
C<headers> (lower-cased names; repeated headers joined with ", "),
C<body> (chunked coding removed), C<elapsed> (seconds, float),
C<header_list> (C<[name, value]> pairs), C<raw_headers>, C<complete>,
C<timed_out> and C<error> (undef on success).

=item sse_open($path_or_url, \%headers, $port, $timeout)

Opens a GET request with C<Accept: text/event-stream> to C<$port> (default:
the main instance) and waits up to C<$timeout> (default 5 s) for the response
headers. Dies when it cannot connect or no headers arrive. Returns a
C<Test::Nginx::Chat::SSE> object:

=over

=item ->read_event($timeout, { comments => 1 })

Next event as C<< { event => ..., id => ..., data => ..., retry => ... } >>
(only the fields that were sent; several C<data:> lines joined with "\n"),
or undef when none is complete within C<$timeout> seconds (default 5) or the
stream ended. Comment lines (C<: text>) are skipped, or returned as
C<< { comment => 'text' } >> when C<comments> is true.

=item ->poll_events({ comments => 1 })

The events (and comments) that are complete now, reading what has arrived
without waiting; an empty list when there are none.

=item ->status, ->headers, ->eof, ->last_chunk, ->read_body($timeout), ->close

HTTP status, lower-cased header hash, whether the stream has ended, whether
it ended properly with the last chunk (C<0\r\n\r\n>; false when the
connection just closed), the rest of the body as text (for non-event
responses), closing the connection.

A stream can also wait in L<Test::Nginx::Chat::Exchange>'s C<wait_any>
beside requests (C<sock>, C<wants>, C<step>).

=back

=item start_nginx_with(%options)

Starts an independent nginx (own port and server root, same binary,
modules and valgrind mode as the main instance) and waits until it listens;
dies with the end of its error.log when it cannot start. Options:
C<port> (default: a free port), C<servroot> (default: the main server
root with C<_1>, C<_2>, ... appended), C<main_config>, C<post_main_config>, C<http_config>,
C<server_config>, C<config> (C<$TEST_NGINX_*> expanded), C<workers>,
C<master> (bool), C<log_level>, C<worker_connections>, C<env> (array ref of
names), C<no_root_location>, C<server_name>, C<user_files> (hash
name => content). Returns a L<Test::Nginx::Chat::Process> object with
C<port>, C<servroot>, C<pid>, C<url($path)>, C<html_dir>, C<error_log>,
C<error_log_size>, C<read_error_log($offset)>, C<read_access_log($offset)>,
C<worker_pids>, C<reload> and C<stop>.

=item stop_nginx(@instances)

Stops the given instances (objects or port numbers), or all instances
started with C<start_nginx_with> when called without arguments, then
reports valgrind findings (if any) as a failing test. Returns the last wait
status. Instances still running at exit are stopped automatically.

=back

The main instance of a file is managed by C<run_tests()> of the block
harness (L<Test::Nginx::Chat::Blocks>) as usual; extra instances do not interfere with it, so
a file can mix blocks and scenario code. Blocks can reach an extra instance
through an environment variable set before C<run_tests()>, for example
C<< $ENV{TEST_NGINX_PEER_PORT} = $node->port >> and then
C<proxy_pass http://127.0.0.1:$TEST_NGINX_PEER_PORT;> in a section.

=cut
