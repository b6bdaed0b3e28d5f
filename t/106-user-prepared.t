# The user row runs as a prepared statement (binary protocol).  Its
# answers are the text protocol's: the same JSON as the row read another
# way (the mariadb client, and U10's statement, which runs as text) for rows
# with NULLs, 4-byte UTF-8, values longer than a fetch slot, the largest
# INT id and datetimes.  The statements live on the connections: after a
# MariaDB restart the next requests prepare them again and answer 200.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use Encode ();
use JSON::PP ();
use Time::HiRes qw(time sleep);

my $config = <<'EOF';
location /api/auth    { chat_user; }
location /api/profile { chat_user; }
location /api/users   { chat_user; chat_internal on; }
EOF

my $ngx = start_nginx_with(
    workers     => 1,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config(),
    config      => $config,
);

$ChatStack::Base = $ngx->url('');

sub stmt_status {
    my %s = map { split /\t/ } split /\n/,
        mysql_cmd("SHOW GLOBAL STATUS LIKE 'Com_stmt_%'");
    return \%s;
}

# a user row as the mariadb client reads it, as the API writes it: strings
# through HEX() (no escaping of the client's batch output in the way)
sub row_json {
    my ($id) = @_;
    my @c = split /\t/, mysql_cmd(
        "SELECT id, HEX(username), HEX(display_name), HEX(status_message), "
        . "is_online, DATE_FORMAT(last_seen_at, '%Y-%m-%dT%H:%i:%s') "
        . "FROM users WHERE id = $id");
    my $str = sub {
        my ($hex) = @_;
        return undef if $hex eq 'NULL';
        return Encode::decode('UTF-8', pack('H*', $hex));
    };

    return {
        id             => 0 + $c[0],
        username       => $str->($c[1]),
        display_name   => $str->($c[2]),
        status_message => $str->($c[3]),
        is_online      => $c[4] ? JSON::PP::true() : JSON::PP::false(),
        last_seen_at   => $c[5] eq 'NULL' ? undef : $c[5],
    };
}

sub sql_string {
    my ($s) = @_;
    return 'NULL' unless defined $s;
    return "X'" . unpack('H*', Encode::encode('UTF-8', $s)) . "'";
}

# a user made in MariaDB with the given columns; returns id and token
sub make_user {
    my (%c) = @_;
    my $name = unique_name('ps');
    my $id = $c{id} // 'NULL';
    mysql_cmd("DELETE FROM users WHERE id = $c{id}") if defined $c{id};
    my $got = mysql_cmd(
        "INSERT INTO users (id, email, password_hash, username, display_name, "
        . "status_message, is_online, last_seen_at, is_active, created_at, "
        . "updated_at) VALUES ($id, '$name\@example.com', 'x', "
        . sql_string($c{username} // $name) . ', '
        . sql_string($c{display_name}) . ', '
        . sql_string($c{status_message}) . ', ' . ($c{is_online} // 0) . ', '
        . ($c{last_seen_at} ? "'$c{last_seen_at}'" : 'NULL')
        . ", 1, UTC_TIMESTAMP(), UTC_TIMESTAMP()); "
        . "SELECT LAST_INSERT_ID()");
    $got = $c{id} if defined $c{id};
    die "no user: $got\n" unless $got =~ /^\d+$/;
    return ($got, user_token($got, "$name\@example.com"));
}

my $long = ("\x{1F600}\x{e9}\x{2713}" x 60) . 'end';    # 540 bytes

my @rows = (
    [ 'NULLs',
      { display_name => undef, status_message => undef } ],
    [ 'unicode, 4-byte UTF-8, quotes and backslashes',
      { display_name => "J\x{f6}rg \x{1F680} O'Brien \\ \"x\"",
        status_message => "\x{65e5}\x{672c}\x{8a9e}\ttab",
        is_online => 1, last_seen_at => '2024-02-29 23:59:59' } ],
    [ 'a value longer than a fetch slot',
      { display_name => 'long', status_message => $long,
        last_seen_at => '1970-01-01 00:00:01' } ],
    [ 'the largest INT id and a datetime far ahead',
      { id => 2147483647, display_name => '', status_message => '0',
        is_online => 1, last_seen_at => '9999-12-31 23:59:59' } ],
);

my $before = stmt_status();

for my $r (@rows) {
    my ($what, $cols) = @$r;
    my ($id, $token) = make_user(%$cols);
    my $want = row_json($id);

    my ($status, $me) = api(GET => '/api/profile/me', $token);
    is($status, 200, "$what: profile/me 200");
    is_deeply($me, $want, "$what: profile/me as the row read by the client");

    ($status, my $one) = api(GET => "/api/users/$id", $token);
    is($status, 200, "$what: U8 200");
    is_deeply($one, $want, "$what: U8 as the row read by the client");

    # U10 reads the same row through the text protocol
    ($status, my $list) = api(POST => '/api/users/batch', $token,
                              { user_ids => [ $id ] });
    is($status, 200, "$what: U10 200");
    is_deeply($list->[0], $me, "$what: the text protocol's JSON is the same")
        or diag(explain($list));
}

my $after = stmt_status();

# the server's own counters: the statements ran prepared, and were
# prepared once per connection, not once per request
cmp_ok($after->{Com_stmt_execute} - $before->{Com_stmt_execute}, '>=',
       2 * @rows, 'the rows were read by prepared statements');
cmp_ok($after->{Com_stmt_prepare} - $before->{Com_stmt_prepare}, '<=',
       2 * 4, '... prepared at most once per statement and connection');

# the next id drawn is the largest one's plus one again, not past INT
mysql_cmd('DELETE FROM users WHERE id = 2147483647; '
          . 'ALTER TABLE users AUTO_INCREMENT = 1');


# ---- a MariaDB restart

SKIP: {
    skip 'needs the servers of "./build.sh test" (TEST_NGINX_WORK and the '
         . 'pid files) to restart them', 7
        unless can_restart_servers();

    my ($id, $token) = make_user(display_name => "caf\x{e9}");

    # every connection of the pool has the statement
    my @before = map { [ api(GET => '/api/profile/me', $token) ] } 1 .. 12;
    is(scalar(grep { $_->[0] == 200 } @before), 12,
       'before the restart: 200s');

    stop_server('mariadb');

    my ($status, $body) = api(GET => '/api/profile/me', $token);
    is($status, 503, 'MariaDB down: 503');
    is(ref $body, 'HASH', '... in JSON');

    start_server('mariadb');

    my $until = time() + 30;
    ($status, $body) = (0, undef);
    while (time() < $until) {
        ($status, $body) = api(GET => '/api/profile/me', $token);
        last if $status == 200;
        sleep 0.2;
    }

    # each connection comes back on its own: a few more requests meet the
    # others, each of which prepares anew
    my @after = map { [ api(GET => '/api/profile/me', $token) ] } 1 .. 12;
    my @bad = grep { $_->[0] != 200 } @after;

    is($status, 200, 'after the restart: 200');
    is_deeply([ map { $_->[1] } @after[0, -1] ], [ ($before[0][1]) x 2 ],
              '... the same JSON as before it');
    is(scalar(@bad), 0, '... and for every request after it')
        or diag(explain(\@bad));

    # the counters began again with the server
    my $restarted = stmt_status();
    cmp_ok($restarted->{Com_stmt_prepare}, '>=', 1,
           '... prepared again on the new server')
        or diag(explain($restarted));
}

$ngx->stop;

done_testing();
