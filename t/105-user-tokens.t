# Tokens beyond the original's: every token carries a unique "jti" (two
# logins within a second get two tokens, and logging out one leaves the
# other), the original's claims stay as they are, a token whose "nbf" or
# "iat" lies more than 60 s ahead is refused, and a logout ends the streams
# opened with that token within a second, on every node, and only those.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use Digest::SHA qw(sha256_hex);
use MIME::Base64 qw(decode_base64url);
use Time::HiRes qw(time sleep);

my $config = <<'EOF';
location /api/auth          { chat_user; }
location /api/profile       { chat_user; }
location /api/chat-rooms    { chat_msg; }
location /api/messages      { chat_msg; }
location /api/notifications { chat_notify; }
EOF

my @nodes = chat_nodes(2, $config);

$ChatStack::Base = $nodes[0]->url('');

sub claims {
    my ($token) = @_;
    my (undef, $payload) = split /\./, $token // '';
    return json_decode(decode_base64url($payload // '')) // {};
}

sub me {
    my ($token) = @_;
    my ($status) = api(GET => '/api/profile/me', $token);
    return $status;
}

sub logout {
    my ($token) = @_;
    my ($status) = api(POST => '/api/auth/logout', $token);
    return $status;
}


# ---- jti

my $user = register_user();
my ($t1, $t2);

# two logins in the same second
for (1 .. 5) {
    my $s = int(time);
    ($t1, $t2) = map { login_user($user) } 1 .. 2;
    last if int(time) == $s;
}

isnt($t1, $t2, 'two logins within a second: two tokens');

my $c = claims($t1);
is_deeply([sort keys %$c], [qw(email exp jti sub type)],
          "the original's claims and a jti");
is($c->{sub}, "$user->{id}", '... sub is the id as a string');
is($c->{type}, 'access', '... type access');
like($c->{jti} // '', qr/^[0-9a-f]{32}$/, '... jti: 16 random bytes');
isnt($c->{jti}, claims($t2)->{jti}, '... another for the second login');

is(logout($t1), 200, 'logging out the first');
is(me($t1), 401, '... refuses it');
is(me($t2), 200, '... and leaves the second');

# and a second apart
my $s0 = int(time);
sleep 0.05 while int(time) == $s0;
my $t1b = login_user($user);
sleep 1;
my $t2b = login_user($user);
isnt(claims($t1b)->{exp}, claims($t2b)->{exp},
     'two logins a second apart: another exp');
is(logout($t2b), 200, 'logging out the later');
is(me($t2b), 401, '... refuses it');
is(me($t1b), 200, '... and leaves the earlier');


# ---- nbf and iat

my $now = time;
my @cases = (
    [nbf => int($now) + 120, 401, 'nbf two minutes ahead'],
    [iat => int($now) + 120, 401, 'iat two minutes ahead'],
    [iat => int($now) + 30,  200, 'iat 30 s ahead (clock skew)'],
    [nbf => int($now) + 30,  200, 'nbf 30 s ahead (clock skew)'],
    [nbf => int($now) - 10,  200, 'nbf in the past'],
    [iat => int($now) - 10,  200, 'iat in the past'],
    [iat => 'yesterday',     401, 'iat not a number'],
    [nbf => '1',             401, 'nbf a string'],
);

for my $k (@cases) {
    my ($claim, $value, $want, $name) = @$k;
    my $token = user_token($user->{id}, $user->{email}, $claim => $value);
    is(me($token), $want, "a token with $name: $want");
}


# ---- logout ends the token's streams, on both nodes

my $bob = register_user();
my $tb = login_user($bob);
my ($st, $room) = api(GET => "/api/chat-rooms/check/$bob->{id}", $t2);
is($st, 200, 'a room');
my $rid = $room->{id};

sub streams_of {
    my ($token) = @_;
    return map {
        my $port = $_->port;
        (sse_open("/api/messages/stream/$rid?access_token=$token", {},
                  $port),
         sse_open('/api/notifications/stream',
                  { Authorization => "Bearer $token" }, $port))
    } @nodes;
}

# until a stream ends (true) or the time is up
sub ends_within {
    my ($s, $deadline) = @_;
    while (!$s->eof) {
        my $left = $deadline - time;
        return 0 if $left <= 0;
        $s->read_event($left);
    }
    return 1;
}

my $t3 = login_user($user);
my @doomed = streams_of($t2);
my @others = streams_of($t3);

is(scalar(grep { $_->status == 200 } @doomed, @others), 8,
   'four streams with each of two tokens, on two nodes');

# the streams' subscriptions in place
sleep 0.3;

my $t0 = time;
is(logout($t2), 200, 'logout of one token');

my $deadline = $t0 + 1;
my @ended = grep { ends_within($_, $deadline) } @doomed;
is(scalar @ended, 4, "its four streams end within 1 s");
ok(!(grep { !$_->last_chunk } @ended), '... each with the last chunk');

# the other token's streams stay and keep delivering
my ($sent) = api(POST => "/api/messages/$rid", $tb, { content => 'still?' });
is($sent, 201, 'a message for the room');
my $live = 0;
for my $s (@others[0, 2]) {
    while (my $ev = $s->read_event(2)) {
        if (($ev->{data} // '') =~ /still\?/) {
            $live++;
            last;
        }
    }
}
is($live, 2, "the other token's room streams stay open and deliver");
ok(!(grep { $_->eof } @others), "... none of its streams ended");
$_->close for @others;


# ---- a revocation the stream did not hear: found one second after opening

my $t4 = login_user($user);
my ($s) = sse_open('/api/notifications/stream',
                   { Authorization => "Bearer $t4" }, $nodes[0]->port);
is($s->status, 200, 'a stream');

# revoked as a logout does, but without the message a logout publishes
redis_cmd('SET', 'chat:revoked:' . sha256_hex($t4), 1, 'EX', 60);

ok(ends_within($s, time + 2.5),
   'a stream whose token was revoked unheard ends within its recheck');


# ---- tokens a worker remembers: every check still holds on every use

my $short = user_token($user->{id}, $user->{email}, exp => time() + 2,
                       jti => unique_name('j'));
is(me($short), 200, 'a token about to expire: 200');
is(me($short), 200, '... again (remembered)');

# the same tail (the slot a worker keeps it in), one byte of the claims
# changed: not the remembered token
my $forged = $short;
my (undef, $payload) = split /\./, $forged;
my $i = int(length($payload) / 2);
my $ch = substr($payload, $i, 1);
substr($payload, $i, 1) = $ch eq 'A' ? 'B' : 'A';
$forged =~ s/\.[^.]+\./.$payload./;
is(me($forged), 401, 'a remembered token with one byte changed: 401');

my $t5 = login_user($user);
is(me($t5), 200, 'a token in use');
redis_cmd('SET', 'chat:revoked:' . sha256_hex($t5), 1, 'EX', 60);
is(me($t5), 401, '... revoked: 401 at once, remembered or not');

sleep 2.5;
is(me($short), 401, 'the token about to expire, expired: 401');

done_testing();
