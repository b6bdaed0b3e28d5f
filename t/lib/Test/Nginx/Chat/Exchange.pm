package Test::Nginx::Chat::Exchange;

# One HTTP/1.1 request on a connection of its own, driven without blocking
# so that many of them (and event streams) can share one select loop, and
# an account of how it ended.  Load and reload tests need to tell apart
# what a plain client lumps together as "no response":
#
#   response             a complete response arrived (with stream => 1: its
#                        status line and header; the body is the caller's,
#                        see sse())
#   refused              no connection was made (refused, reset or timed
#                        out while connecting)
#   closed_before_write  the server closed or reset the connection before
#                        the whole request was written
#   cut                  the whole request was written, then the connection
#                        was closed or reset before a status line came
#   truncated            a status line came, then the connection ended
#                        before the response was complete
#   timeout              the timeout passed first; the client closed the
#                        connection (as a browser or a load balancer does)
#
# "Written" is what a client can know: every byte was handed to the kernel.
# A server that closed its end before that shows as closed_before_write
# when its FIN or RST had arrived before the first byte went out.

use strict;
use warnings;

use Carp qw(croak);
use Errno ();
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_ERROR MSG_PEEK MSG_DONTWAIT
              MSG_NOSIGNAL inet_aton pack_sockaddr_in);
use Time::HiRes qw(time);

use Test::Nginx::Chat::HTTP qw(build_request parse_http_response
    header_pairs);

use Exporter 'import';
our @EXPORT_OK = qw(http_call wait_any);

# outcomes after which the same request may simply be sent again: the
# server cannot have seen it
our %RETRYABLE = (refused => 1, closed_before_write => 1);


# new(method => 'POST', url => 'http://127.0.0.1:port/path',
#     headers => {...} or [...], body => $bytes, timeout => $seconds,
#     stream => $bool)
sub new {
    my ($class, %o) = @_;
    my ($host, $port, $path) =
        ($o{url} // '') =~ m{^http://([^/:]+)(?::(\d+))?(/.*)?$}
        or croak "not an http:// URL: " . ($o{url} // 'undef');
    my $method = uc($o{method} // 'GET');

    my @pairs = header_pairs($o{headers});
    my %has = map { lc $_->[0] => 1 } @pairs;
    unshift @pairs, ['Connection', 'close'] unless $has{connection};
    unshift @pairs, ['Host', 'localhost'] unless $has{host};
    if (!$has{'content-length'} && !$has{'transfer-encoding'}
        && (defined $o{body} || $method =~ /^(?:POST|PUT|PATCH)$/))
    {
        push @pairs, ['Content-Length', length($o{body} // '')];
    }

    my $self = bless {
        method   => $method,
        url      => $o{url},
        stream   => $o{stream} ? 1 : 0,
        request  => build_request($method, $path // '/', 'HTTP/1.1',
                                  \@pairs, $o{body}),
        sent     => 0,
        buf      => '',
        state    => 'connect',
        t0       => time,
        sock     => undef,
        outcome  => undef,
    }, $class;
    $self->{deadline} = $self->{t0} + ($o{timeout} // 5);
    $self->_connect($host, $port // 80);
    return $self;
}

sub _connect {
    my ($self, $host, $port) = @_;
    my $addr = inet_aton($host) or croak "cannot resolve $host";

    socket(my $sock, PF_INET, SOCK_STREAM, 0) or croak "socket: $!";
    my $flags = fcntl($sock, F_GETFL, 0) or croak "fcntl: $!";
    fcntl($sock, F_SETFL, $flags | O_NONBLOCK) or croak "fcntl: $!";
    $self->{sock} = $sock;

    if (connect($sock, pack_sockaddr_in($port, $addr))) {
        $self->{state} = 'write';
    } elsif (!$!{EINPROGRESS} && !$!{EINTR}) {
        $self->_finish('refused', "connect: $!");
    }
}

sub sock     { $_[0]{sock} }
sub done     { defined $_[0]{outcome} }
sub outcome  { $_[0]{outcome} }
sub deadline { $_[0]{outcome} ? undef : $_[0]{deadline} }

# what the loop should wait for: 'w', 'r', or undef once finished
sub wants {
    my ($self) = @_;
    return undef if $self->{outcome};
    return $self->{state} eq 'read' ? 'r' : 'w';
}

# Make whatever progress is possible now without blocking; true once
# finished.
sub step {
    my ($self) = @_;
    return 1 if $self->{outcome};

    $self->_step_connect if $self->{state} eq 'connect';
    $self->_step_write if !$self->{outcome} && $self->{state} eq 'write';
    $self->_step_read if !$self->{outcome} && $self->{state} eq 'read';

    $self->_finish('timeout', "no response within the timeout "
                              . "($self->{state})")
        if !$self->{outcome} && time >= $self->{deadline};

    return $self->{outcome} ? 1 : 0;
}

sub _step_connect {
    my ($self) = @_;
    my $w = '';
    vec($w, fileno $self->{sock}, 1) = 1;
    return unless select(undef, $w, undef, 0) > 0;

    my $err = unpack('i', getsockopt($self->{sock}, SOL_SOCKET, SO_ERROR)
                          // pack('i', 0));
    if ($err) {
        local $! = $err;
        # reset: it was accepted, and given up before the request
        $self->_finish($!{ECONNRESET} || $!{EPIPE} ? 'closed_before_write'
                                                   : 'refused',
                       "connect: $!");
        return;
    }
    $self->{state} = 'write';
}

sub _step_write {
    my ($self) = @_;
    my $sock = $self->{sock};

    if ($self->{sent} == 0) {
        # a connection the server has already given up
        my $peek = '';
        my $r = recv($sock, $peek, 1, MSG_PEEK | MSG_DONTWAIT);
        if (defined $r && $peek eq '') {
            $self->_finish('closed_before_write', 'closed before the request');
            return;
        }
        if (!defined $r && ($!{ECONNRESET} || $!{EPIPE})) {
            $self->_finish('closed_before_write', "reset before the request: $!");
            return;
        }
    }

    while ($self->{sent} < length $self->{request}) {
        my $n = send($sock, substr($self->{request}, $self->{sent}),
                     MSG_NOSIGNAL | MSG_DONTWAIT);
        if (!defined $n) {
            return if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
            $self->_finish('closed_before_write', "write: $!");
            return;
        }
        $self->{sent} += $n;
    }

    $self->{state} = 'read';
    $self->{written_at} = time;
}

sub _step_read {
    my ($self) = @_;

    while (1) {
        my $n = sysread($self->{sock}, $self->{buf}, 65536, length $self->{buf});
        if (!defined $n) {
            return if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
            $self->_ended("read: $!");
            return;
        }
        if ($n == 0) {
            $self->_ended('closed by the server');
            return;
        }

        my $res = parse_http_response($self->{buf},
                                      head => $self->{method} eq 'HEAD');
        next unless $res;
        if ($res->{error}) {
            $self->{res} = $res;
            $self->_finish('truncated', $res->{error});
            return;
        }
        if ($self->{stream} || $res->{complete}) {
            $self->{res} = $res;
            $self->_finish('response');
            return;
        }
    }
}

# the connection ended while reading
sub _ended {
    my ($self, $why) = @_;
    my $res = parse_http_response($self->{buf},
                                  head => $self->{method} eq 'HEAD', eof => 1);

    if ($res && $res->{complete} && !$res->{error}) {
        $self->{res} = $res;
        $self->_finish('response');

    } elsif ($self->{buf} =~ m{\AHTTP/\d+(?:\.\d+)? \d{3}}) {
        $self->{res} = $res;
        $self->_finish('truncated', "$why after a partial response");

    } else {
        $self->_finish('cut', "$why after the request was written");
    }
}

sub _finish {
    my ($self, $outcome, $error) = @_;
    $self->{outcome} = $outcome;
    $self->{error} = $error;
    $self->{elapsed} = time - $self->{t0};

    # a stream's connection stays open for sse()
    unless ($outcome eq 'response' && $self->{stream}) {
        close $self->{sock} if $self->{sock};
        $self->{sock} = undef;
    }
}

# Drop the connection now (a client giving up).
sub abort {
    my ($self) = @_;
    $self->_finish('timeout', 'aborted by the client') unless $self->{outcome};
    close $self->{sock} if $self->{sock};
    $self->{sock} = undef;
}

sub result {
    my ($self) = @_;
    my $res = $self->{res} // {};
    return {
        outcome   => $self->{outcome},
        retryable => $RETRYABLE{ $self->{outcome} // '' } ? 1 : 0,
        status    => $res->{status},
        headers   => $res->{headers} // {},
        body      => $res->{body} // '',
        elapsed   => $self->{elapsed},
        written   => $self->{state} eq 'read' ? 1 : 0,
        error     => $self->{error},
    };
}

# With stream => 1, after a response: the body as a Test::Nginx::Chat::SSE
# object, which takes over the connection.
sub sse {
    my ($self) = @_;
    croak "sse(): not a stream response" unless ($self->{outcome} // '') eq
        'response' && $self->{stream} && $self->{sock};
    require Test::Nginx::Chat;
    my $res = $self->{res};
    my $sock = delete $self->{sock};
    return Test::Nginx::Chat::SSE->_new($sock, $res,
                                        substr($self->{buf}, $res->{body_offset}));
}

# Run to the end, blocking; returns $self.
sub run {
    my ($self) = @_;
    wait_any($self->{deadline} - time + 0.01, $self) until $self->step;
    return $self;
}

# http_call(%options of new()) -> result(): one blocking request
sub http_call {
    return __PACKAGE__->new(@_)->run->result;
}

# wait_any($timeout, @objects): waits until one of the objects can make
# progress, one's deadline passes, or $timeout seconds went by; then lets
# the ready ones make it (step()).  The objects are exchanges or anything
# else with sock, wants ('r', 'w' or undef), deadline and step, e.g. the
# event streams of Test::Nginx::Chat::SSE.  Returns the objects stepped.
sub wait_any {
    my ($timeout, @objs) = @_;
    my ($rin, $win) = ('', '');
    my $now = time;
    my $wait = $timeout;
    my @live;

    for my $o (@objs) {
        my $want = $o->wants or next;
        my $sock = $o->sock or next;
        vec($want eq 'r' ? $rin : $win, fileno $sock, 1) = 1;
        push @live, $o;
        my $d = $o->deadline;
        $wait = $d - $now if defined $d && $d - $now < $wait;
    }
    $wait = 0 if $wait < 0;

    my ($rout, $wout) = ($rin, $win);
    my $n = select($rout, $wout, undef, $wait);
    return () if $n < 0 && !$!{EINTR} && !@live;

    $now = time;
    my @stepped;
    for my $o (@live) {
        my $fd = fileno($o->sock // next);
        my $d = $o->deadline;
        if (($n > 0 && (vec($rout, $fd, 1) || vec($wout, $fd, 1)))
            || (defined $d && $now >= $d))
        {
            $o->step;
            push @stepped, $o;
        }
    }
    return @stepped;
}

1;

__END__

=head1 NAME

Test::Nginx::Chat::Exchange - non-blocking HTTP requests that record how
they ended

=head1 SYNOPSIS

    use Test::Nginx::Chat::Exchange qw(http_call wait_any);

    my $r = http_call(method => 'POST', url => $node->url('/api/x'),
                      headers => { 'Content-Type' => 'application/json' },
                      body => '{}', timeout => 2);
    if ($r->{outcome} eq 'response') { ... $r->{status} ... }
    elsif ($r->{retryable}) { ... send it again ... }

    # many at once
    my @x = map { Test::Nginx::Chat::Exchange->new(url => $url,
                                                   timeout => 2) } 1 .. 40;
    wait_any(0.1, @x) while grep { !$_->done } @x;

    # an event stream
    my $x = Test::Nginx::Chat::Exchange->new(url => $url, stream => 1,
        headers => { 'Last-Event-ID' => $last });
    $x->run;
    my $sse = $x->sse;    # Test::Nginx::Chat::SSE

=head1 DESCRIPTION

C<new> starts connecting at once; C<step> makes progress without
blocking; C<wait_any> waits on several. C<result> returns C<outcome>
(C<response>, C<refused>, C<closed_before_write>, C<cut>, C<truncated>,
C<timeout>), C<retryable> (the first two: the server cannot have seen the
request), C<status>, C<headers> (lower-cased), C<body> (decoded), C<elapsed>,
C<written> and C<error>. C<abort> closes the connection early (recorded as a
timeout).

=cut
