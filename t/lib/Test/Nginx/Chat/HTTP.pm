package Test::Nginx::Chat::HTTP;

# Minimal raw-socket HTTP/1.x client pieces shared by the test harness:
# request building, non-blocking send/receive with a deadline, response
# parsing (Content-Length, chunked, read-until-close) and chunked decoding.

use strict;
use warnings;

use Errno qw(EAGAIN EWOULDBLOCK EINTR EINPROGRESS);
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

use Exporter 'import';
our @EXPORT_OK = qw(
    header_pairs
    connect_tcp send_data read_responses build_request
    parse_http_response decode_chunked parse_header_lines
);

# connect_tcp($host, $port, $deadline) -> ($sock) or (undef, $error)
# The returned socket is non-blocking.
sub connect_tcp {
    my ($host, $port, $deadline) = @_;
    my $left = $deadline - time;
    $left = 0.05 if $left < 0.05;
    my $sock = IO::Socket::INET->new(
        PeerAddr => $host,
        PeerPort => $port,
        Proto    => 'tcp',
        Timeout  => $left,
    );
    return (undef, "cannot connect to $host:$port: " . ($@ || $!)) unless $sock;
    $sock->blocking(0);
    $sock->autoflush(1);
    return ($sock);
}

# send_data($sock, $data, $deadline) -> undef on success, error string else.
sub send_data {
    my ($sock, $data, $deadline) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $sel = IO::Select->new($sock);
    my $off = 0;
    while ($off < length $data) {
        my $left = $deadline - time;
        return 'timeout' if $left <= 0;
        next unless $sel->can_write($left);
        my $n = syswrite($sock, $data, length($data) - $off, $off);
        if (!defined $n) {
            next if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
            return "write failed: $!";
        }
        $off += $n;
    }
    return undef;
}

# build_request($method, $uri, $proto, \@header_pairs, $body) -> bytes
sub build_request {
    my ($method, $uri, $proto, $headers, $body) = @_;
    my $req = "$method $uri" . (length($proto // '') ? " $proto" : '') . "\r\n";
    $req .= "$_->[0]: $_->[1]\r\n" for @$headers;
    $req .= "\r\n";
    $req .= $body if defined $body;
    return $req;
}

# decode_chunked($data) -> ($body, $complete, $consumed)
# Decodes as much of a chunked message body as is available. $complete is
# true once the last (zero-size) chunk and the trailer section were seen;
# $consumed is the number of input bytes that belong to the body.
sub decode_chunked {
    my ($data) = @_;
    my ($body, $pos) = ('', 0);
    while (1) {
        my $eol = index($data, "\n", $pos);
        return ($body, 0, $pos) if $eol < 0;
        my $line = substr($data, $pos, $eol - $pos);
        $line =~ s/\r\z//;
        my ($hex) = $line =~ /^\s*([0-9a-fA-F]+)/;
        return ($body, 0, $pos) unless defined $hex;    # malformed
        my $size = hex $hex;
        my $start = $eol + 1;
        if ($size == 0) {
            # Trailer fields, terminated by an empty line.
            my $p = $start;
            while (1) {
                my $e = index($data, "\n", $p);
                return ($body, 0, $pos) if $e < 0;
                my $t = substr($data, $p, $e - $p);
                $p = $e + 1;
                return ($body, 1, $p) if $t eq '' || $t eq "\r";
            }
        }
        if (length($data) < $start + $size) {
            # Partial chunk: hand out what we have, but do not consume it.
            $body .= substr($data, $start);
            return ($body, 0, $pos);
        }
        $body .= substr($data, $start, $size);
        my $after = $start + $size;
        # Each chunk's data is followed by CRLF.
        if (substr($data, $after, 2) eq "\r\n") {
            $pos = $after + 2;
        } elsif (substr($data, $after, 1) eq "\n") {
            $pos = $after + 1;
        } else {
            return ($body, 0, $pos) if length($data) < $after + 2;
            $pos = $after;    # tolerate a missing CRLF
        }
    }
}

# parse_header_lines(@lines) -> (\%headers, \@pairs)
# Header names are lower-cased in %headers; repeated headers are joined
# with ", ". @pairs keeps the original names and order.
sub parse_header_lines {
    my (%h, @pairs);
    for my $line (@_) {
        if ($line =~ /^[ \t]+(.*)$/ && @pairs) {    # obsolete line folding
            $pairs[-1][1] .= " $1";
            next;
        }
        my ($name, $value) = $line =~ /^([^:]+):[ \t]*(.*?)[ \t]*$/ or next;
        push @pairs, [$name, $value];
    }
    for my $p (@pairs) {
        my $k = lc $p->[0];
        $h{$k} = exists $h{$k} ? "$h{$k}, $p->[1]" : $p->[1];
    }
    return (\%h, \@pairs);
}

# parse_http_response($buf, head => BOOL, eof => BOOL) -> \%res or undef
# Returns undef while the header block is incomplete. Otherwise a hash with
# status, reason, proto, headers (lower-cased), header_list, raw_headers,
# body (decoded), complete (whole message seen), consumed (bytes used)
# and body_offset (where the body starts in $buf).
# Interim 1xx responses (except 101) are skipped.
sub parse_http_response {
    my ($buf, %opt) = @_;
    my $skipped = 0;
    while (1) {
        my ($hend, $sep) = (index($buf, "\r\n\r\n", $skipped), 4);
        my $lf = index($buf, "\n\n", $skipped);
        ($hend, $sep) = ($lf, 2) if $lf >= 0 && ($hend < 0 || $lf < $hend);
        return undef if $hend < 0;

        my $raw_headers = substr($buf, $skipped, $hend + $sep - $skipped);
        my @lines = split /\r?\n/, substr($buf, $skipped, $hend - $skipped);
        my $status_line = shift(@lines) // '';
        my ($proto, $status, $reason) =
            $status_line =~ m{^(HTTP/\d+(?:\.\d+)?)\s+(\d{3})(?:\s+(.*?))?\s*$};
        my ($headers, $pairs) = parse_header_lines(@lines);
        my $body_off = $hend + $sep;

        my %res = (
            proto       => $proto,
            status      => $status,
            reason      => $reason // '',
            headers     => $headers,
            header_list => $pairs,
            raw_headers => $raw_headers,
            body        => '',
            complete    => 0,
            consumed    => length $buf,
            body_offset => $body_off,
        );
        if (!defined $status) {
            $res{error} = "malformed status line: $status_line";
            $res{body} = substr($buf, $body_off);
            return \%res;
        }
        if ($status =~ /^1/ && $status != 101) {
            $skipped = $body_off;
            next;
        }

        my $rest = substr($buf, $body_off);
        my $te = $headers->{'transfer-encoding'} // '';
        my $cl = $headers->{'content-length'};
        if ($opt{head} || $status =~ /^1/ || $status == 204 || $status == 304) {
            @res{qw(complete consumed)} = (1, $body_off);
        } elsif ($te =~ /chunked/i) {
            my ($body, $done, $used) = decode_chunked($rest);
            @res{qw(body complete consumed)} = ($body, $done, $body_off + $used);
        } elsif (defined $cl && $cl =~ /^\s*(\d+)/) {
            my $len = $1;
            if (length($rest) >= $len) {
                @res{qw(body complete consumed)} =
                    (substr($rest, 0, $len), 1, $body_off + $len);
            } else {
                $res{body} = $rest;
            }
        } else {
            # Delimited by connection close.
            $res{body} = $rest;
            $res{complete} = $opt{eof} ? 1 : 0;
        }
        return \%res;
    }
}

# read_responses($sock, $deadline, \@methods) -> \%result
# Reads one response per entry of @methods (the request methods, needed to
# know that HEAD responses carry no body) from a single connection.
# Result: { responses => [...], timed_out => BOOL, eof => BOOL,
#           raw => all bytes received, error => read error or undef }.
# A partial (incomplete) last response is included when one was started.
sub read_responses {
    my ($sock, $deadline, $methods) = @_;
    my ($buf, $raw, $eof, $timed_out, $error) = ('', '', 0, 0, undef);
    my @res;
    my $sel = IO::Select->new($sock);
    while (@res < @$methods) {
        my $head = uc($methods->[@res] // '') eq 'HEAD';
        my $r = parse_http_response($buf, head => $head, eof => $eof);
        if ($r && $r->{complete}) {
            push @res, $r;
            substr($buf, 0, $r->{consumed}) = '';
            next;
        }
        if ($eof) {
            push @res, _partial($r, $buf) if length $buf;
            last;
        }
        my $left = $deadline - time;
        if ($left <= 0 || !$sel->can_read($left)) {
            next if $left > 0 && $!{EINTR};
            $timed_out = 1;
            push @res, _partial($r, $buf) if length $buf;
            last;
        }
        my $n = sysread($sock, $buf, 65536, length $buf);
        if (!defined $n) {
            next if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
            $error = "read failed: $!";
            $eof = 1;
        } elsif ($n == 0) {
            $eof = 1;
        } else {
            $raw .= substr($buf, -$n);
        }
    }
    return {
        responses => \@res,
        timed_out => $timed_out,
        eof       => $eof,
        raw       => $raw,
        error     => $error,
    };
}

# Aliases of the Test::Nginx::Chat functions of the same names (loaded on
# first use), e.g. for "--- init" code in files that only load the block
# harness.
sub http_request {
    require Test::Nginx::Chat;
    goto &Test::Nginx::Chat::http_request;
}

sub sse_open {
    require Test::Nginx::Chat;
    goto &Test::Nginx::Chat::sse_open;
}

sub _partial {
    my ($r, $buf) = @_;
    return { %$r, complete => 0 } if $r;
    # Not even a complete header block: keep the bytes for diagnostics.
    return {
        status => undef, reason => '', headers => {}, header_list => [],
        raw_headers => $buf, body => '', complete => 0,
    };
}


# Header pairs from a hash ref or a flat array ref (keeps order/duplicates).
sub header_pairs {
    my ($h) = @_;
    return () unless $h;
    return map { [$_, $h->{$_}] } sort keys %$h if ref $h eq 'HASH';
    my @flat = @$h;
    my @pairs;
    push @pairs, [splice @flat, 0, 2] while @flat;
    return @pairs;
}

1;

__END__

=head1 NAME

Test::Nginx::Chat::HTTP - raw socket HTTP/1.x client helpers for the tests

=head1 FUNCTIONS

All functions are exported on request.

=over

=item connect_tcp($host, $port, $deadline)

Returns a connected non-blocking socket, or C<(undef, $error)>.
C<$deadline> is an absolute C<Time::HiRes::time> value.

=item send_data($sock, $bytes, $deadline)

Writes all bytes; returns undef on success or an error string.

=item build_request($method, $uri, $proto, \@pairs, $body)

Serialises a request; C<@pairs> holds C<[name, value]> header pairs.

=item parse_http_response($buf, head => $bool, eof => $bool)

Parses one response from the start of C<$buf>; see the comment in the
source for the returned hash.

=item decode_chunked($data)

Returns C<($body, $complete, $consumed)>.

=item read_responses($sock, $deadline, \@methods)

Reads one response per request method from one connection.

=item http_request(...), sse_open(...)

Aliases of the functions of L<Test::Nginx::Chat> (not exported).

=back

=cut
