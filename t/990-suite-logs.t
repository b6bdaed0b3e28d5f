# The access logs in the JSON format of conf/nginx.conf, as the whole
# suite left them (this file runs last): the test stack's and those of
# the files that start the shipped configuration themselves.  Every line
# is one JSON object in valid UTF-8, whatever the suite's clients sent,
# and no token appears in any of them.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use Cwd qw(getcwd);

my $work = $ENV{TEST_NGINX_WORK} // getcwd() . '/.work';
my $servroot = $ENV{TEST_NGINX_SERVROOT} // "$work/servroot";

my @logs = grep { -s $_ } ("$work/nginx-test/logs/access.log",
                          glob("${servroot}_*/logs/access.log"));

# a JSON log begins with an object; the per-file nginx of the other tests
# write nginx's default format
@logs = grep {
    open my $fh, '<', $_ or die "$_: $!";
    my $first = <$fh> // '';
    close $fh;
    $first =~ /^\{/;
} @logs;

plan skip_all => 'no JSON access log written (run the whole suite)'
    unless @logs;

my $json = JSON::PP->new->utf8;     # dies on bytes that are not UTF-8
my $jwt = qr/eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+/;

for my $log (@logs) {
    open my $fh, '<:raw', $log or die "$log: $!";
    my ($lines, @bad, @tokens) = (0);

    while (my $line = <$fh>) {
        $lines++;
        chomp $line;
        my $entry = eval { $json->decode($line) };
        push @bad, "$.: $@" unless ref $entry eq 'HASH';
        push @tokens, $. if $line =~ $jwt;
    }

    close $fh;

    (my $name = $log) =~ s{^\Q$work\E/}{};
    is(scalar @bad, 0, "$name: $lines lines, each a JSON object in UTF-8")
        or diag(join "\n", @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
    is(scalar @tokens, 0, "$name: no token in it")
        or diag("lines @tokens[0 .. ($#tokens < 9 ? $#tokens : 9)]");
}

done_testing();
